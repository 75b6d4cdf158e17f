"""Call shapes and signatures read from a ModelClass, and every definition error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt
import PIL.Image
import pytest
from clarifai_grpc.grpc.api import resources_pb2

from orchard import errors
from orchard.authoring import (
    JSON,
    Image,
    ModelClass,
    NamedFields,
    Param,
    Text,
    signatures,
)
from orchard.runners.models.model_class import method_infos

MT = resources_pb2.RunnerMethodType
DT = resources_pb2.ModelTypeField.DataType


def _by_name(model: type[ModelClass]) -> dict[str, resources_pb2.MethodSignature]:
    return {s.name: s for s in signatures(model)}


class Shapes(ModelClass):
    @ModelClass.method
    def predict(self, text: str, n: int = 2) -> str:
        """Repeat text.

        Indented detail."""
        return text * n

    @ModelClass.method
    def generate(self, text: str) -> Iterator[str]:
        yield text

    @ModelClass.method
    def stream(self, chunks: Iterator[Text], upper: bool = False) -> Iterator[Text]:
        yield from chunks

    @ModelClass.method
    async def apredict(self, text: str) -> str:
        return text

    @ModelClass.method
    async def agenerate(self, text: str) -> AsyncIterator[str]:
        yield text

    @ModelClass.method
    async def astream(self, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        async for chunk in chunks:
            yield chunk

    def helper(self) -> None:
        """Not decorated: not a model method."""


def test_call_shapes_come_from_annotations():
    found = {name: s.method_type for name, s in _by_name(Shapes).items()}
    assert found == {
        "predict": MT.UNARY_UNARY,
        "generate": MT.UNARY_STREAMING,
        "stream": MT.STREAMING_STREAMING,
        "apredict": MT.UNARY_UNARY,
        "agenerate": MT.UNARY_STREAMING,
        "astream": MT.STREAMING_STREAMING,
    }
    infos = method_infos(Shapes)
    assert [n for n, i in infos.items() if i.is_async] == ["apredict", "agenerate", "astream"]


def test_signature_fields_follow_the_official_conventions():
    sigs = _by_name(Shapes)
    predict = sigs["predict"]
    assert predict.description == "Repeat text.\n\nIndented detail."
    text, n = predict.input_fields
    assert (text.name, text.type, text.required, text.default) == ("text", DT.STR, True, "")
    assert (n.name, n.type, n.required, n.default, n.is_param) == ("n", DT.INT, False, "2", False)
    assert [(f.name, f.type, f.iterator) for f in predict.output_fields] == [
        ("return", DT.STR, False)
    ]
    chunks, upper = sigs["stream"].input_fields
    assert (chunks.type, chunks.iterator, upper.default) == (DT.TEXT, True, "false")
    assert sigs["stream"].output_fields[0].iterator
    assert method_infos(Shapes)["stream"].stream_arg.name == "chunks"


class Typed(ModelClass):
    @ModelClass.method
    def predict(
        self,
        a: list[int],
        b: tuple[str, float],
        c: NamedFields(x=int, y=list[str]),
        d: dict[str, Any],
        e: PIL.Image.Image,
        f: npt.NDArray[np.float32],
        g: Optional[str] = None,  # noqa: UP045 - both spellings are accepted
        h: int | None = None,
        i: list = None,  # noqa: RUF013 - the official SDK's spelling
        j: JSON = None,
        k: str = "plain",
        m: float = Param(0.5, "temp", min_value=0, max_value=1),
        o: str = Param("x", choices=["x", "y"]),
    ) -> list[list[Image]]:
        return []


def test_types_and_defaults_become_fields():
    fields = {f.name: f for f in _by_name(Typed)["predict"].input_fields}
    assert fields["a"].type == DT.LIST
    assert [(t.name, t.type) for t in fields["a"].type_args] == [("a_item", DT.INT)]
    assert [(t.name, t.type) for t in fields["b"].type_args] == [
        ("b_item", DT.STR),
        ("b_item", DT.FLOAT),
    ]
    c = fields["c"]
    assert c.type == DT.NAMED_FIELDS
    assert [(t.name, t.type) for t in c.type_args] == [("x", DT.INT), ("y", DT.LIST)]
    assert c.type_args[1].type_args[0].name == "y_item"
    assert [fields[n].type for n in "defghij"] == [
        DT.JSON_DATA,
        DT.IMAGE,
        DT.NDARRAY,
        DT.STR,
        DT.INT,
        DT.JSON_DATA,
        DT.JSON_DATA,
    ]
    assert [fields[n].default for n in "ghk"] == ["null", "null", "plain"]
    m, o = fields["m"], fields["o"]
    assert (m.description, m.is_param, m.default, m.required) == ("temp", True, "0.5", False)
    assert (m.model_type_range_info.min, m.model_type_range_info.max) == (0.0, 1.0)
    assert [opt.id for opt in o.model_type_enum_options] == ["x", "y"]
    ret = _by_name(Typed)["predict"].output_fields[0]
    assert (ret.type, ret.type_args[0].type, ret.type_args[0].type_args[0].name) == (
        DT.LIST,
        DT.LIST,
        "return_item_item",
    )


def test_param_defaults_are_plain_values_in_direct_calls():
    class M(ModelClass):
        @ModelClass.method
        def predict(self, x: float = Param(0.25, "x"), *, y: str = Param("a")) -> str:
            return f"{x}{y}"

    assert M().predict() == "0.25a"
    assert method_infos(M)["predict"].args[0].param == Param(0.25, "x")


def test_subclasses_inherit_methods_and_overrides_stay_methods():
    class Base(ModelClass):
        @ModelClass.method
        def predict(self, x: str) -> str:
            return x

        @ModelClass.method
        def other(self, x: int) -> int:
            return x

    class Child(Base):
        def predict(self, x: str, times: int = 2) -> str:  # not decorated again
            return x * times

        @ModelClass.method
        def extra(self, x: bool) -> bool:
            return x

    sigs = _by_name(Child)
    assert list(sigs) == ["predict", "other", "extra"]
    assert [f.name for f in sigs["predict"].input_fields] == ["x", "times"]
    assert [f.name for f in _by_name(Base)["predict"].input_fields] == ["x"]


def test_annotations_naming_later_definitions_are_resolved_at_collection():
    class M(ModelClass):
        @ModelClass.method
        def predict(self, x: str) -> LaterAnswer:
            return LaterAnswer(text=x)  # noqa: F821

    global LaterAnswer

    class LaterAnswer(NamedFields):
        text: str

    try:
        ret = _by_name(M)["predict"].output_fields[0]
        assert [(t.name, t.type) for t in ret.type_args] == [("text", DT.STR)]
    finally:
        del LaterAnswer


def test_an_unresolvable_annotation_fails_at_collection():
    class M(ModelClass):
        @ModelClass.method
        def predict(self, x: str) -> NoSuchType:  # noqa: F821
            return x

    with pytest.raises(errors.ModelInvalid, match=r"M\.predict: .*NoSuchType.*define or import"):
        signatures(M)


def test_a_model_without_methods_has_no_signatures():
    class Empty(ModelClass):
        pass

    with pytest.raises(errors.ModelInvalid, match="Empty has no model methods; decorate"):
        signatures(Empty)


def _define(body: str) -> None:
    namespace: dict[str, Any] = {
        "ModelClass": ModelClass,
        "Iterator": Iterator,
        "Any": Any,
        "Union": Union,
        "Optional": Optional,
        "NamedFields": NamedFields,
        "Param": Param,
    }
    exec(f"class Bad(ModelClass):\n    @ModelClass.method\n{body}", namespace)


DEFINITION_ERRORS = [
    ("    def f(self, x: str):\n        pass", r"Bad\.f has no return annotation; annotate"),
    (
        "    def f(self, x) -> str:\n        pass",
        r"parameter 'x' of Bad\.f has no type annotation; annotate it, e\.g\. `x: str`",
    ),
    (
        "    def f(self, x: set) -> str:\n        pass",
        r"parameter 'x' of Bad\.f: set is not a supported type; use one of: str, bytes",
    ),
    ("    def f(self, x: Any) -> str:\n        pass", r"typing\.Any has no wire form"),
    ("    def f(self, x: Union[int, str]) -> str:\n        pass", "is a union; use one type"),
    (
        "    def f(self) -> Optional[str]:\n        pass",
        r"return annotation of Bad\.f: .*union.*only for a parameter",
    ),
    ("    def f(self, x: tuple[int, ...]) -> str:\n        pass", r"no fixed length.*List\[T\]"),
    ("    def f(self, x: NamedFields) -> str:\n        pass", r"NamedFields needs its fields"),
    (
        "    def f(self, x: NamedFields(keys=int)) -> str:\n        pass",
        r"field name 'keys' is reserved",
    ),
    (
        "    def f(self, x: list[Iterator[int]]) -> str:\n        pass",
        r"Iterator\[\.\.\.\] may only",
    ),
    ("    def f(self, x: Iterator) -> Iterator[str]:\n        pass", r"needs an item type"),
    (
        "    def f(self, x: Iterator[str]) -> str:\n        pass",
        r"Bad\.f takes a stream \(parameter 'x'\) but does not return one; annotate the return",
    ),
    (
        "    def f(self, a: Iterator[str], b: Iterator[int]) -> Iterator[str]:\n        pass",
        r"Bad\.f has 2 streaming parameters \['a', 'b'\]; a method takes at most one",
    ),
    (
        "    def f(self, with_proto: bool) -> str:\n        pass",
        r"parameter 'with_proto' of Bad\.f uses a reserved name .* rename the parameter",
    ),
    ("    def f(self, *xs: str) -> str:\n        pass", r"Bad\.f takes \*xs: str; model methods"),
    ("    def f(self, **kw: str) -> str:\n        pass", r"takes \*\*kw: str; model methods"),
    ("    def f(self, x: str, /) -> str:\n        pass", r"named parameters only"),
    (
        "    def f(self, x: float = Param(3.0, max_value=1.0)) -> str:\n        pass",
        r"parameter 'x' of Bad\.f: the default 3\.0 is above max_value 1\.0; fix the Param",
    ),
    (
        "    def f(self, x: str = Param('z', choices=['a'])) -> str:\n        pass",
        r"the default 'z' is not one of the choices \['a'\]",
    ),
    ("    @staticmethod\n    def f(x: str) -> str:\n        pass", r"decorates a function"),
]


@pytest.mark.parametrize(("body", "message"), DEFINITION_ERRORS)
def test_definition_errors_name_the_class_method_and_fix(body, message):
    with pytest.raises(errors.ModelInvalid, match=message) as caught:
        _define(body)
    assert caught.value.code == errors.SC.MODEL_INVALID_ARGUMENT


def test_only_decorated_functions_are_methods():
    from unittest.mock import MagicMock

    class M(ModelClass):
        client = MagicMock()  # answers any attribute, like a mocked import

        @ModelClass.method
        def predict(self, x: str) -> str:
            return x

    assert list(_by_name(M)) == ["predict"]
