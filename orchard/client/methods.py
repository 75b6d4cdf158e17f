"""A model's own methods as Python callables: the typed client (api-notes 3.5, "ModelClient").

Each ``MethodSignature`` becomes a :class:`ModelMethod` of the same name and keywords::

    model.predict(prompt="hi", max_tokens=64)          # UNARY_UNARY → PostModelOutputs
    for chunk in model.generate(prompt="hi"): ...       # UNARY_STREAMING → GenerateModelOutputs
    for out in model.stream(chunks=iter(["a", "b"])):   # STREAMING_STREAMING → StreamModelOutputs

Arguments travel as ``Input.data.parts`` (one part per argument, the official SDK's wire form,
:mod:`orchard.codec.serializers`), the method name in
``Input.data.metadata['_method_name']``, the value comes back from the output's ``return`` part.
A single positional list of dicts whose keys are argument names is a batch (one input per
dict; the result is a list). ``with_proto=True`` also returns (or yields) the response. A stream
method's first request carries every argument and the first item of the streaming one; later
requests carry only the next item.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format

from orchard import errors
from orchard.client.predictions import Predictor, Response
from orchard.codec.serializers import WireError, decode, encode_args

SC = status_code_pb2.StatusCode
DataType = resources_pb2.ModelTypeField.DataType
MethodType = resources_pb2.RunnerMethodType
Signature: TypeAlias = resources_pb2.MethodSignature
GET_SIGNATURES = "_GET_SIGNATURES"
RETURN = "return"
WITH_PROTO = "with_proto"


def signatures_from_json(text: str) -> list[Signature]:
    """The ``_GET_SIGNATURES`` answer (``{name: signature as proto JSON}``) as protos."""
    try:
        found = json.loads(text)
        items = found.values() if isinstance(found, dict) else found
        return [json_format.ParseDict(item, Signature()) for item in items]
    except (ValueError, TypeError, AttributeError, json_format.ParseError) as exc:
        raise errors.OrchardError(
            f"the model's _GET_SIGNATURES answer is not signature JSON ({exc}); check that it "
            "was built from a ModelClass"
        ) from None


class ModelMethod:
    """One method of the model; call it as the model's own Python method."""

    def __init__(self, signature: Signature, predictor: Predictor) -> None:
        self.signature = signature
        self.name = signature.name
        self._predictor = predictor
        self.__doc__ = signature.description or signature_text(signature)

    def __repr__(self) -> str:
        return f"<model method {signature_text(self.signature)}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with_proto = bool(kwargs.pop(WITH_PROTO, False))
        calls, single = self._bind(args, kwargs)
        kind = self.signature.method_type
        if kind == MethodType.UNARY_UNARY:
            return self._predict(calls, single, with_proto)
        if kind == MethodType.UNARY_STREAMING:
            return self._generate(calls, single, with_proto)
        if kind == MethodType.STREAMING_STREAMING:
            return self._stream(calls, with_proto)
        raise errors.UserError(
            f"method {self.name!r} has call shape {MethodType.Name(kind)}, which the SDK cannot "
            "call; use UNARY_UNARY, UNARY_STREAMING or STREAMING_STREAMING methods"
        )

    # -- arguments ---------------------------------------------------------------------------

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[dict], bool]:
        """The calls (one dict of arguments per input) and whether it is a single call."""
        names = [f.name for f in self.signature.input_fields]
        if len(args) == 1 and not kwargs and _is_batch(args[0], names):
            return [dict(item) for item in args[0]], False
        if len(args) > len(names):
            raise errors.UserError(
                f"{self.name}() takes {len(names)} argument(s) ({', '.join(names) or 'none'}), "
                f"got {len(args)} positional; see model.method_signature({self.name!r})"
            )
        values = dict(zip(names, args, strict=False))
        twice = sorted(set(values) & set(kwargs))
        if twice:
            raise errors.UserError(f"{self.name}() got multiple values for {twice}")
        return [{**values, **kwargs}], True

    def _input(self, values: Mapping[str, Any], fields: Sequence[Any]) -> resources_pb2.Input:
        inp = resources_pb2.Input()
        try:
            encode_args(fields, values, inp.data)
        except WireError as exc:
            raise errors.UserError(
                f"{self.name}(): {exc}; see model.method_signature({self.name!r})"
            ) from None
        return inp

    # -- the three call shapes ---------------------------------------------------------------

    def _predict(self, calls: list[dict], single: bool, with_proto: bool) -> Any:
        fields = self.signature.input_fields
        inputs = [self._input(values, fields) for values in calls]
        response = self._predictor.predict(self._predictor.request(inputs, self.name))
        result = self._values(response, single)
        return (result, response) if with_proto else result

    def _generate(self, calls: list[dict], single: bool, with_proto: bool) -> Iterator[Any]:
        fields = self.signature.input_fields
        inputs = [self._input(values, fields) for values in calls]
        request = self._predictor.request(inputs, self.name)
        return self._decoded(self._predictor.generate(request), single, with_proto)

    def _stream(self, calls: list[dict], with_proto: bool) -> Iterator[Any]:
        if len(calls) != 1:
            raise errors.UserError(f"{self.name}() streams one call at a time; pass no batch")
        values = dict(calls[0])
        streamed = self._streamed_field(values)
        items = _iterate(values.pop(streamed.name), self.name, streamed.name)
        requests = (
            self._predictor.request([inp], self.name)
            for inp in self._stream_inputs(values, streamed, items)
        )
        return self._decoded(self._predictor.stream(requests), None, with_proto)

    def _streamed_field(self, values: Mapping[str, Any]) -> resources_pb2.ModelTypeField:
        streamed = next((f for f in self.signature.input_fields if f.iterator), None)
        if streamed is None:
            raise errors.UserError(f"{self.name}() is a stream method with no streaming argument")
        if streamed.name not in values:
            raise errors.UserError(
                f"{self.name}() needs {streamed.name}= (an iterable of its items)"
            )
        return streamed

    def _stream_inputs(
        self, values: dict[str, Any], streamed: resources_pb2.ModelTypeField, items: Iterator[Any]
    ) -> Iterator[resources_pb2.Input]:
        """The first input carries every argument and the first item; later ones one item."""
        first = next(items, _END)
        if first is _END:
            return
        yield self._input({**values, streamed.name: first}, self.signature.input_fields)
        for item in items:
            yield self._input({streamed.name: item}, [streamed])

    # -- results -----------------------------------------------------------------------------

    def _decoded(
        self, responses: Iterator[Response], single: bool | None, with_proto: bool
    ) -> Iterator[Any]:
        """Each response's value (a list for a batch; ``single=None``: by output count)."""
        for response in responses:
            one = len(response.outputs) == 1 if single is None else single
            result = self._values(response, one)
            yield (result, response) if with_proto else result

    def _values(self, response: Response, single: bool) -> Any:
        if not response.outputs:
            raise errors.OrchardError(f"{self.name}(): the response carries no output")
        values = [self._value(output) for output in response.outputs]
        return values[0] if single else values

    def _value(self, output: resources_pb2.Output) -> Any:
        if output.status.code not in (0, SC.SUCCESS):
            raise errors.from_status(output.status)
        if not self.signature.output_fields:
            return None
        field = self.signature.output_fields[0]
        parts = {part.id: part.data for part in output.data.parts}
        data = parts.get(RETURN, output.data)  # the official SDK also reads an inlined value
        try:
            return decode(field, data)
        except WireError as exc:
            raise errors.OrchardError(
                f"{self.name}(): the model's answer does not fit its signature: {exc}"
            ) from None


_END = object()


def _is_batch(value: Any, names: Sequence[str]) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and set(item) <= set(names) for item in value)
    )


def _iterate(value: Any, method: str, name: str) -> Iterator[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise errors.UserError(
            f"{method}(): {name}= is the streaming argument; pass an iterable of its items "
            f"(got {type(value).__name__})"
        )
    return iter(value)


# -- signatures as text --------------------------------------------------------------------


_PY_TYPES = {
    DataType.STR: "str",
    DataType.BYTES: "bytes",
    DataType.INT: "int",
    DataType.FLOAT: "float",
    DataType.BOOL: "bool",
    DataType.NDARRAY: "np.ndarray",
    DataType.JSON_DATA: "JSON",
    DataType.TEXT: "Text",
    DataType.IMAGE: "Image",
    DataType.CONCEPT: "Concept",
    DataType.REGION: "Region",
    DataType.FRAME: "Frame",
    DataType.AUDIO: "Audio",
    DataType.VIDEO: "Video",
}


def signature_text(signature: Signature) -> str:
    """``def name(a: str, n: int = 3) -> Iterator[str]:``, as the official SDK shows it."""
    params = ", ".join(_param_text(f) for f in signature.input_fields)
    returns = _type_text(signature.output_fields[0]) if signature.output_fields else "None"
    return f"def {signature.name}({params}) -> {returns}:"


def _param_text(field: resources_pb2.ModelTypeField) -> str:
    text = f"{field.name}: {_type_text(field)}"
    if field.required:
        return text
    return f"{text} = {_default_text(field)}"


def _default_text(field: resources_pb2.ModelTypeField) -> str:
    """The default as Python source (stored as text: a str as itself, others as JSON)."""
    if field.type == DataType.STR and field.default != "null":
        return repr(field.default)
    try:
        return repr(json.loads(field.default))
    except ValueError:
        return str(field.default)


def _type_text(field: resources_pb2.ModelTypeField) -> str:
    return f"Iterator[{_item_text(field)}]" if field.iterator else _item_text(field)


def _item_text(field: resources_pb2.ModelTypeField) -> str:
    args = [_item_text(arg) for arg in field.type_args]
    if field.type == DataType.LIST:
        return f"List[{', '.join(args)}]"
    if field.type == DataType.TUPLE:
        return f"Tuple[{', '.join(args)}]"
    if field.type == DataType.NAMED_FIELDS:
        named = ", ".join(f"{a.name}={t}" for a, t in zip(field.type_args, args, strict=True))
        return f"NamedFields({named})"
    return _PY_TYPES.get(field.type, DataType.Name(field.type))
