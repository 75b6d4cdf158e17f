"""``orchard model local-test``: call every method of a model package once, on this machine.

Two halves, one per process:

- the CLI's process (``orchard.cli.model_local_test``): builds the package's environment with
  the server's own ``choose_interpreter`` and ``EnvBuilder`` (or reuses it from the cache), then
  runs ``ENV/bin/python -m orchard.packaging.localtest DIR`` and passes its output on;
- the environment (:func:`main`): loads the model class with its real imports, instantiates it,
  calls ``load_model()``, and sends each method one example call through the runner's request
  adapter (``request_adapter.predict`` / ``generate`` / ``stream`` with ``PostModelOutputsRequest``
  protos encoded as the official client encodes them), printing every decoded output. A
  ``test()`` method of the class, if any, runs last. The exit code is 1 when anything failed.

Example calls come from the method signatures: optional parameters keep their declared defaults
and required ones get an example of their type (:func:`example_value`); a streaming parameter
gets three such examples.
"""

from __future__ import annotations

import logging
import struct
import sys
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard import errors
from orchard.codec import data_types as dt
from orchard.codec.serializers import decode, encode_args, type_name
from orchard.packaging.inspect import load_model_class
from orchard.packaging.package import MODEL_FILE
from orchard.runners.models import request_adapter
from orchard.runners.models.calls import METHOD_KEY
from orchard.runners.models.model_class import MethodType, ModelClass, signatures
from orchard.runners.utils.method_signatures import RETURN

Field: TypeAlias = resources_pb2.ModelTypeField
Signature: TypeAlias = resources_pb2.MethodSignature
Request: TypeAlias = service_pb2.PostModelOutputsRequest
Response: TypeAlias = service_pb2.MultiOutputResponse
DataType = resources_pb2.ModelTypeField.DataType
SC = status_code_pb2.StatusCode

STREAM_ITEMS = 3
SHOWN_CHARS = 200
SHOWN_OUTPUTS = 10  # of a stream; the rest are counted
_TEXTS = ("hello world", "from orchard", "goodbye")


# -- example values --------------------------------------------------------------------------


class NoExample(Exception):
    """A required parameter whose type has no example value here (say, Audio)."""


def example_png(index: int = 0, size: int = 16) -> bytes:
    """A small RGB PNG (a colour gradient that ``index`` shifts), written with zlib and struct
    only, so it needs no Pillow in the model's environment."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(size) for c in _pixel(x, y, index, size))
        for y in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _pixel(x: int, y: int, index: int, size: int) -> tuple[int, int, int]:
    step = 256 // size
    return ((x * step + 80 * index) % 256, (y * step) % 256, 160)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def example_value(field: Field, index: int = 0) -> Any:
    """An example value of the field's type; ``index`` varies it (for the items of a stream).
    Raises :class:`NoExample`."""
    maker = _EXAMPLES.get(field.type)
    if maker is None:
        raise NoExample(
            f"no example value for parameter {field.name!r} of type {type_name(field)}; "
            "write a test() method in the model class that calls the method"
        )
    return maker(field, index)


def _ndarray(index: int) -> Any:
    np = dt.require("numpy", "an example ndarray")
    return np.arange(6, dtype=np.float32).reshape(2, 3) + index


_EXAMPLES: dict[int, Callable[[Field, int], Any]] = {
    DataType.STR: lambda _f, i: _TEXTS[i % len(_TEXTS)],
    DataType.BYTES: lambda _f, i: _TEXTS[i % len(_TEXTS)].encode(),
    DataType.INT: lambda _f, i: i + 1,
    DataType.FLOAT: lambda _f, i: 0.5 * (i + 1),
    DataType.BOOL: lambda _f, i: True,
    DataType.JSON_DATA: lambda _f, i: {"example": i + 1},
    DataType.TEXT: lambda _f, i: dt.Text(_TEXTS[i % len(_TEXTS)]),
    DataType.IMAGE: lambda _f, i: dt.Image(bytes=example_png(i)),
    DataType.CONCEPT: lambda _f, i: dt.Concept(f"example {i + 1}", 0.9),
    DataType.REGION: lambda _f, i: dt.Region(
        box=[0.1, 0.1, 0.6, 0.6], concepts=[dt.Concept("example", 0.9)]
    ),
    DataType.FRAME: lambda _f, i: dt.Frame(image=dt.Image(bytes=example_png(i)), index=i),
    DataType.NDARRAY: lambda _f, i: _ndarray(i),
    DataType.LIST: lambda f, i: [example_value(f.type_args[0], i + n) for n in range(2)],
    DataType.TUPLE: lambda f, i: tuple(example_value(a, i) for a in f.type_args),
    DataType.NAMED_FIELDS: lambda f, i: dt.NamedFields(
        **{a.name: example_value(a, i) for a in f.type_args}
    ),
}


@dataclass(frozen=True)
class ExampleCall:
    """The arguments of one example call: the required ones, and the items of the streaming
    parameter (None for a method without one). Optional ones keep their defaults."""

    kwargs: dict[str, Any]
    items: list[Any] | None

    def describe(self, name: str) -> str:
        shown = [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        if self.items is not None:
            shown.append(f"<stream of {_short(self.items)}>")
        return f"{name}({', '.join(shown)})"


def example_call(signature: Signature) -> ExampleCall:
    """Raises :class:`NoExample`."""
    kwargs = {
        f.name: example_value(f) for f in signature.input_fields if f.required and not f.iterator
    }
    stream = [f for f in signature.input_fields if f.iterator]
    items = [example_value(stream[0], i) for i in range(STREAM_ITEMS)] if stream else None
    return ExampleCall(kwargs, items)


# -- requests, as the official typed client builds them ---------------------------------------


def request_for(name: str, fields: list[Field], values: dict[str, Any]) -> Request:
    """One input: a part per argument, and the method's name in ``metadata``."""
    inp = resources_pb2.Input()
    encode_args(fields, values, inp.data)
    inp.data.metadata[METHOD_KEY] = name
    return Request(inputs=[inp])


def requests_for(signature: Signature, call: ExampleCall) -> list[Request]:
    """The call's requests: one, or for a stream the first with every argument and the first
    item, then one per later item."""
    fields = list(signature.input_fields)
    if call.items is None:
        return [request_for(signature.name, fields, call.kwargs)]
    stream = next(f for f in fields if f.iterator)
    first = request_for(signature.name, fields, {**call.kwargs, stream.name: call.items[0]})
    later = [request_for(signature.name, [stream], {stream.name: i}) for i in call.items[1:]]
    return [first, *later]


def responses_for(
    model: ModelClass, signature: Signature, requests: list[Request]
) -> Iterator[Response]:
    if signature.method_type == MethodType.UNARY_UNARY:
        return iter([request_adapter.predict(model, requests[0])])
    if signature.method_type == MethodType.UNARY_STREAMING:
        return request_adapter.generate(model, requests[0])
    return request_adapter.stream(model, iter(requests))


# -- running and reporting -------------------------------------------------------------------


def _print(text: str) -> None:
    print(text, flush=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _shown(output: resources_pb2.Output, returns: Field) -> str:
    part = next((p for p in output.data.parts if p.id == RETURN), None)
    value = "<no return part>" if part is None else _short(decode(returns, part.data))
    counts = [
        f"{name}={getattr(output, name)}"
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens")
        if getattr(output, name)
    ]
    return value + (f"  ({', '.join(counts)})" if counts else "")


def run_method(model: ModelClass, signature: Signature) -> bool | None:
    """Call one method with an example call and print what it gives; None when skipped."""
    _print(f"== {signature.name} ({MethodType.Name(signature.method_type)})")
    try:
        call = example_call(signature)
    except NoExample as exc:
        _print(f"   skipped: {exc}")
        return None
    _print(f"   call: {call.describe(signature.name)}")
    count = 0
    for response in responses_for(model, signature, requests_for(signature, call)):
        for output in response.outputs or [resources_pb2.Output(status=response.status)]:
            if output.status.code != SC.SUCCESS:
                _print(f"   FAILED: {output.status.description}")
                return False
            count += 1
            if count <= SHOWN_OUTPUTS:
                _print(f"   -> {_shown(output, signature.output_fields[0])}")
    if count > SHOWN_OUTPUTS:
        _print(f"   ... and {count - SHOWN_OUTPUTS} more")
    _print(f"   ok ({count} output{'s' if count != 1 else ''})")
    return True


def run_test_method(model: ModelClass, method_names: set[str]) -> bool | None:
    """The class's own ``test()``, unless it has none or it is a model method (called above)."""
    if not callable(getattr(model, "test", None)) or "test" in method_names:
        return None
    _print("== test()")
    try:
        model.test()  # type: ignore[attr-defined]
    except Exception:
        _print("   FAILED:\n" + traceback.format_exc().rstrip())
        return False
    _print("   ok")
    return True


_OFFICIAL = (
    "{path} subclasses the official clarifai SDK's ModelClass; local-test runs models written "
    "with Orchard's: `from orchard.authoring import ModelClass` (or import the official one in "
    "a try block that falls back to Orchard's on ImportError, as examples/models do)"
)


def instantiate(package_dir: Path) -> ModelClass:
    """The model class of the package, instantiated, with ``load_model()`` called."""
    path = package_dir / MODEL_FILE
    try:
        cls = load_model_class(package_dir, stub_missing=False)
    except errors.ModelInvalid as exc:
        if _official_sdk_missing(exc):
            raise errors.ModelInvalid(_OFFICIAL.format(path=path)) from None
        raise
    if not issubclass(cls, ModelClass):
        raise errors.ModelInvalid(_OFFICIAL.format(path=path))
    model = cls()
    model.load_model()
    return model


def _official_sdk_missing(exc: errors.ModelInvalid) -> bool:
    """Whether loading failed on importing the official SDK (it is not in the environment)."""
    missing = exc.__context__  # load_model_class raises `from None`; the cause stays here
    if not isinstance(missing, ModuleNotFoundError):
        return False
    return (missing.name or "").split(".")[0] == "clarifai"


def run_all(model: ModelClass, sigs: list[Signature]) -> int:
    """Every method, then ``test()``; prints a summary and returns the exit code."""
    results = {sig.name: run_method(model, sig) for sig in sigs}
    tested = run_test_method(model, set(results))
    if tested is not None:
        results["test()"] = tested
    failed = [name for name, ok in results.items() if ok is False]
    skipped = [name for name, ok in results.items() if ok is None]
    summary = f"{len(results) - len(failed) - len(skipped)} passed"
    summary += f", {len(failed)} failed ({', '.join(failed)})" if failed else ""
    summary += f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    _print(summary)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    """``python -m orchard.packaging.localtest DIR``, inside the package's environment."""
    logging.basicConfig(level=logging.WARNING, format="   %(name)s: %(message)s")
    package_dir = Path(argv[0]).resolve()
    try:
        model = instantiate(package_dir)
        sigs = signatures(model)
    except errors.OrchardError as exc:
        _print(f"Error: {exc.message}")
        return 1
    except Exception:
        _print(f"loading the model failed:\n{traceback.format_exc().rstrip()}")
        return 1
    return run_all(model, sigs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
