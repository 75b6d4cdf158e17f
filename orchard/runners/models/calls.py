"""The pure half of the request adapter: pick the method, decode its arguments, build outputs
and statuses.

Nothing here calls a model method; :mod:`orchard.runners.models.request_adapter` does, with
these.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from orchard import errors
from orchard.codec.serializers import (
    WireError,
    decode_args,
    encode,
    struct_to_python,
    type_name,
)
from orchard.runners.models.model_class import (
    ArgSpec,
    MethodInfo,
    MethodType,
    ModelClass,
    method_infos,
    signatures_json,
    take_output_context,
)
from orchard.runners.utils import legacy
from orchard.runners.utils.method_signatures import EMPTY, RETURN

log = logging.getLogger("orchard.runners")

SC = status_code_pb2  # its values as module constants (the enum wrapper resolves each one slowly)
DataType = resources_pb2.ModelTypeField.DataType
Request: TypeAlias = service_pb2.PostModelOutputsRequest
Response: TypeAlias = service_pb2.MultiOutputResponse
Entry = Literal["predict", "generate", "stream"]

METHOD_KEY = "_method_name"
GET_SIGNATURES = "_GET_SIGNATURES"

# Which method types each entry point serves; generate also serves a unary method (a stream of one).
_SERVES: dict[Entry, tuple[int, ...]] = {
    "predict": (MethodType.UNARY_UNARY,),
    "generate": (MethodType.UNARY_STREAMING, MethodType.UNARY_UNARY),
    "stream": (MethodType.STREAMING_STREAMING,),
}
_CALLED_WITH = {
    MethodType.UNARY_UNARY: "PostModelOutputs (the client's predict-style call)",
    MethodType.UNARY_STREAMING: "GenerateModelOutputs (the client's generate-style call)",
    MethodType.STREAMING_STREAMING: "StreamModelOutputs (the client's stream-style call)",
}


class CallError(Exception):
    """The whole request fails: the message is the client's status description."""


class ArgumentError(Exception):
    """One input's arguments do not fit the method."""


@dataclass(frozen=True)
class Call:
    """One input decoded: the keyword arguments, and whether it came in the old format."""

    kwargs: dict[str, Any]
    legacy: bool


# -- choosing the method ----------------------------------------------------------------------


def requested_name(request: Request) -> str | None:
    """``inputs[0].data.metadata['_method_name']``, if set."""
    if not request.inputs:
        return None
    metadata = request.inputs[0].data.metadata
    return str(metadata[METHOD_KEY]) if METHOD_KEY in metadata.fields else None


def wants_signatures(request: Request) -> bool:
    return requested_name(request) == GET_SIGNATURES


def select_method(model: type[ModelClass], request: Request, entry: Entry) -> MethodInfo:
    """The method a request calls: the one it names, else the one named like the entry point,
    else the only one of the entry point's shape. Raises :class:`CallError`."""
    infos = _infos(model)
    name = requested_name(request) or _default_name(model, infos, entry)
    info = infos.get(name)
    if info is None:
        raise CallError(f"{model.__name__} has no method {name!r}; {_listing(infos)}")
    if info.method_type not in _SERVES[entry]:
        raise CallError(
            f"{model.__name__}.{name} is {MethodType.Name(info.method_type)}; call it with "
            f"{_CALLED_WITH[info.method_type]}"
        )
    return info


def _infos(model: type[ModelClass]) -> dict[str, MethodInfo]:
    try:
        return method_infos(model)
    except errors.ModelInvalid as exc:
        raise CallError(f"the model cannot be served: {exc}") from None


def _default_name(model: type[ModelClass], infos: dict[str, MethodInfo], entry: Entry) -> str:
    if entry in infos and infos[entry].method_type in _SERVES[entry]:
        return entry
    shaped = [n for n, i in infos.items() if i.method_type == _SERVES[entry][0]]
    if len(shaped) == 1:
        return shaped[0]
    raise CallError(
        f"the request names no method (inputs[0].data.metadata['{METHOD_KEY}']) and "
        f"{model.__name__} has no single {entry} method to default to; {_listing(infos)}"
    )


def _listing(infos: dict[str, MethodInfo]) -> str:
    shown = ", ".join(f"{n} ({MethodType.Name(i.method_type)})" for n, i in infos.items())
    return f"available methods: {shown or 'none'}"


# -- decoding arguments -------------------------------------------------------------------------


def inference_params(request: Request) -> dict[str, Any]:
    """``model.model_version.output_info.params`` as plain Python."""
    return struct_to_python(request.model.model_version.output_info.params)


def decode_input(info: MethodInfo, inp: resources_pb2.Input, params: dict[str, Any]) -> Call:
    """The keyword arguments of one input: its parts (or old-format payload), then inference
    params with the same names, then defaults. Raises :class:`ArgumentError`."""
    data, is_legacy = _new_format(inp.data, [a.field for a in info.args])
    with _as_argument_error("argument "):
        values = decode_args([a.field for a in info.args], data)
    kwargs = {spec.name: _argument(spec, values, params) for spec in info.args}
    return Call(kwargs, is_legacy)


def decode_stream_item(info: MethodInfo, request: Request, index: int) -> Any:
    """The stream argument carried by a later request of a stream. Raises ArgumentError."""
    spec = info.stream_arg
    assert spec is not None
    if len(request.inputs) != 1:
        raise ArgumentError(
            f"stream request {index} has {len(request.inputs)} inputs; send exactly one"
        )
    data, _ = _new_format(request.inputs[0].data, [spec.field])
    with _as_argument_error(f"stream request {index}: argument "):
        values = decode_args([spec.field], data)
    if spec.name not in values:
        raise ArgumentError(f"stream request {index} carries no part {spec.name!r}")
    return _cast(spec, values[spec.name])


def _new_format(
    data: resources_pb2.Data, fields: Sequence[resources_pb2.ModelTypeField]
) -> tuple[resources_pb2.Data, bool]:
    if legacy.is_legacy(data):
        return legacy.to_parts(data, fields), True
    return data, False


def _argument(spec: ArgSpec, values: dict[str, Any], params: dict[str, Any]) -> Any:
    if spec.name in values:
        value = _cast(spec, values[spec.name])
    elif spec.name in params and not spec.field.iterator:
        value = _coerce_param(spec, params[spec.name])
    elif spec.default is not EMPTY:
        return spec.default
    else:
        raise ArgumentError(
            f"missing required argument {spec.name!r} ({type_name(spec.field)}); send it as "
            f"the input part with id {spec.name!r}"
        )
    problem = spec.param.problem(value) if spec.param and value is not None else None
    if problem:
        raise ArgumentError(f"argument {spec.name!r}: {problem}")
    return value


def _cast(spec: ArgSpec, value: Any) -> Any:
    if spec.cast is None:
        return value
    with _as_argument_error(f"argument {spec.name!r}: cannot convert the value: "):
        return spec.cast(value)


@contextlib.contextmanager
def _as_argument_error(prefix: str) -> Iterator[None]:
    """Any failure while decoding becomes an :class:`ArgumentError` (the input fails)."""
    try:
        yield
    except WireError as exc:
        raise ArgumentError(f"{prefix}{exc}") from None
    except Exception as exc:
        log.warning("could not decode an argument", exc_info=exc)
        raise ArgumentError(f"{prefix}{type(exc).__name__}: {exc}") from None


def _coerce_param(spec: ArgSpec, raw: Any) -> Any:
    """An inference param (JSON; numbers may come as strings) as the parameter's type."""
    kind = spec.field.type
    try:
        if kind == DataType.LIST and spec.field.type_args[0].type in _PARAM_COERCIONS:
            inner = _PARAM_COERCIONS[spec.field.type_args[0].type]
            return [inner(x) for x in (raw if isinstance(raw, list) else json.loads(raw))]
        if kind in _PARAM_COERCIONS:
            return _PARAM_COERCIONS[kind](raw)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"inference param {spec.name!r}={raw!r} does not fit the parameter's type "
            f"{type_name(spec.field)}"
        ) from None
    raise ArgumentError(
        f"inference param {spec.name!r} cannot set a parameter of type "
        f"{type_name(spec.field)}; send it as an input part instead"
    )


def _param_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int):
        return raw
    number = float(raw)
    if not number.is_integer():
        raise ValueError(raw)
    return int(number)


def _param_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(raw)
    return float(raw)


_BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}


def _param_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word not in _BOOL_WORDS:
        raise ValueError(raw)
    return _BOOL_WORDS[word]


def _param_json(raw: Any) -> Any:
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, dict | list):
        raise ValueError(raw)
    return value


_PARAM_COERCIONS = {
    DataType.STR: lambda raw: raw if isinstance(raw, str) else json.dumps(raw),
    DataType.INT: _param_int,
    DataType.FLOAT: _param_float,
    DataType.BOOL: _param_bool,
    DataType.JSON_DATA: _param_json,
}


# -- outputs and statuses ---------------------------------------------------------------------


def value_output(
    model: type[ModelClass], info: MethodInfo, value: Any, is_legacy: bool
) -> resources_pb2.Output:
    """A SUCCESS output holding ``value`` as part ``return`` (failure if it does not fit)."""
    output = resources_pb2.Output(status=status_pb2.Status(code=SC.SUCCESS, description="Ok"))
    try:
        if value is None:
            raise WireError("None is not a value; return one, or raise to fail the input")
        encode(info.returns, value, output.data.parts.add(id=RETURN).data)
    except Exception as exc:
        problem = str(exc) if isinstance(exc, WireError) else f"{type(exc).__name__}: {exc}"
        return failure_output(
            f"{model.__name__}.{info.name} returned a value that does not fit its "
            f"annotation ({type_name(info.returns)}): {problem}",
            problem,
        )
    if is_legacy:
        legacy.to_legacy_output(output.data)
    _set_tokens(output)
    return output


_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def _set_tokens(output: resources_pb2.Output) -> None:
    counts = take_output_context()
    if counts is None:
        return
    for name, count in zip(_TOKEN_FIELDS, counts, strict=True):
        if count is not None:
            setattr(output, name, count)


def failure_output(description: str, details: str = "") -> resources_pb2.Output:
    status = status_pb2.Status(code=SC.FAILURE, description=description, details=details)
    return resources_pb2.Output(status=status)


def method_failure(
    model: type[ModelClass], info: MethodInfo, exc: BaseException, *, logged: bool = False
) -> resources_pb2.Output:
    """The output of an input whose call raised; the traceback stays in the runner's log
    (written here unless ``logged``: once per batch, by the batcher)."""
    where = f"{model.__name__}.{info.name}"
    if isinstance(exc, ArgumentError):
        return argument_failure(model, info, exc)
    if not logged:
        log.error("model method %s raised", where, exc_info=exc)
    return failure_output(f"{where} raised {type(exc).__name__}: {exc}", str(exc))


def argument_failure(
    model: type[ModelClass], info: MethodInfo, exc: ArgumentError
) -> resources_pb2.Output:
    return failure_output(f"bad arguments for {model.__name__}.{info.name}: {exc}", str(exc))


def unary_response(outputs: Sequence[resources_pb2.Output]) -> Response:
    """All outputs with the top-level status: SUCCESS, MIXED_STATUS or FAILURE."""
    failed = [o for o in outputs if o.status.code != SC.SUCCESS]
    if not failed:
        status = status_pb2.Status(code=SC.SUCCESS, description="Ok")
    elif len(failed) == len(outputs) == 1:
        status = status_pb2.Status(code=SC.FAILURE, description=failed[0].status.description)
    elif len(failed) == len(outputs):
        status = status_pb2.Status(
            code=SC.FAILURE,
            description=f"all {len(outputs)} inputs failed; the first: "
            f"{failed[0].status.description}",
        )
    else:
        status = status_pb2.Status(
            code=SC.MIXED_STATUS,
            description=f"{len(failed)} of {len(outputs)} inputs failed; see each output's status",
        )
    return Response(status=status, outputs=outputs)


def failed_response(description: str, n_inputs: int = 1) -> Response:
    """A request-level failure: FAILURE on top and on one output per input."""
    outputs = [failure_output(description) for _ in range(max(n_inputs, 1))]
    return Response(
        status=status_pb2.Status(code=SC.FAILURE, description=description), outputs=outputs
    )


def signatures_response(model: type[ModelClass]) -> Response:
    """The ``_GET_SIGNATURES`` answer: the JSON in ``outputs[0].data.text.raw``."""
    try:
        text = signatures_json(model)
    except errors.ModelInvalid as exc:
        return failed_response(f"the model cannot be served: {exc}")
    output = resources_pb2.Output(status=status_pb2.Status(code=SC.SUCCESS, description="Ok"))
    output.data.text.raw = text
    return Response(status=status_pb2.Status(code=SC.SUCCESS, description="Ok"), outputs=[output])


def only_input(request: Request, entry: Entry) -> resources_pb2.Input:
    """The single input a generate or stream request must carry. Raises CallError."""
    if len(request.inputs) != 1:
        raise CallError(
            f"{entry} takes exactly one input per request, got {len(request.inputs)}; "
            "send one request per input"
        )
    return request.inputs[0]
