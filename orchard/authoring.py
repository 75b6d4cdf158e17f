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

        @ModelClass.method(batch_size=32, batch_wait_ms=5)
        def shout(self, text: list[str]) -> list[str | Exception]:
            return [t.upper() if t else ValueError("empty text") for t in text]

``shout`` is batched: the runner gathers the inputs of concurrent requests (and the many inputs
of one request) and calls it with up to 32 at once, a lone input waiting at most 5 ms for
others. Each parameter receives a list with one element per input, and the method returns one
result per input, in order; an ``Exception`` in a result's place fails that input only. Clients
see ``shout(text: str) -> str``, like any unary method. Only unary methods can be batched; the
policy and its latency trade-off are in :mod:`orchard.runners.batching`.

``OpenAIModelClass`` is a model the OpenAI-compatible endpoint calls: it forwards to an
OpenAI-compatible server the model starts, or answers in Python (``chat_completion`` and the
other hooks; ``chat_answer`` and ``chat_chunk`` build the shapes); see
:mod:`orchard.runners.models.openai_class`.

``signatures(MyModel)`` gives the ``MethodSignature`` protos stored on a model version. Types
beyond Python's own: :class:`Text`, :class:`Image`, :class:`Audio`, :class:`Video`,
:class:`Concept`, :class:`Region`, :class:`Frame`, :class:`NamedFields`, :class:`JSON`;
``numpy.ndarray`` and ``PIL.Image.Image`` work when those packages are installed (list them in
the model's requirements.txt).
"""

from orchard.codec.data_types import (
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
from orchard.runners.models.model_class import ModelClass, signatures, signatures_json
from orchard.runners.models.openai_class import (
    OpenAIModelClass,
    OpenAIRequestError,
    chat_answer,
    chat_chunk,
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
    "OpenAIModelClass",
    "OpenAIRequestError",
    "Param",
    "Region",
    "Text",
    "Video",
    "chat_answer",
    "chat_chunk",
    "signatures",
    "signatures_json",
]
