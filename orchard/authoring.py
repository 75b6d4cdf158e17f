"""Model authoring: everything a ``model.py`` imports.

::

    from collections.abc import Iterator
    from orchard.authoring import ModelClass, Param

    class MyModel(ModelClass):
        def load_model(self) -> None:
            self.prefix = "echo: "

        @ModelClass.method
        def predict(self, text: str, times: int = Param(1, "repeats", min_value=1)) -> str:
            return self.prefix + text * times

        @ModelClass.method
        def generate(self, text: str) -> Iterator[str]:
            yield from text.split()

``signatures(MyModel)`` gives the ``MethodSignature`` protos stored on a model version. Types
beyond Python's own: :class:`Text`, :class:`Image`, :class:`Audio`, :class:`Video`,
:class:`Concept`, :class:`Region`, :class:`Frame`, :class:`NamedFields`, :class:`JSON`;
``numpy.ndarray`` and ``PIL.Image.Image`` work when those packages are installed (list them in
the model's requirements.txt).
"""

from orchard.runners.models.model_class import ModelClass, signatures, signatures_json
from orchard.runners.utils.data_types import (
    JSON,
    Audio,
    Concept,
    Frame,
    Image,
    NamedFields,
    Region,
    Text,
    Video,
)
from orchard.runners.utils.method_signatures import Param

__all__ = [
    "JSON",
    "Audio",
    "Concept",
    "Frame",
    "Image",
    "ModelClass",
    "NamedFields",
    "Param",
    "Region",
    "Text",
    "Video",
    "signatures",
    "signatures_json",
]
