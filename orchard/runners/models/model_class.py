"""``ModelClass``: what a model author subclasses, and the signatures read from it.

A model is a subclass with ``load_model()`` (optional, called once before serving) and one or
more methods decorated ``@ModelClass.method``. The call shape of each method comes from its
annotations::

    class Echo(ModelClass):
        @ModelClass.method
        def predict(self, text: str, times: int = 1) -> str:             # UNARY_UNARY
            return text * times

        @ModelClass.method
        def generate(self, text: str) -> Iterator[str]:                 # UNARY_STREAMING
            yield from text.split()

        @ModelClass.method
        def stream(self, chunks: Iterator[str], upper: bool = False) -> Iterator[str]:
            for chunk in chunks:                                       # STREAMING_STREAMING
                yield chunk.upper() if upper else chunk

``async def`` methods and async generators get the same shapes; a streaming parameter of an
async method receives an async iterator. Every problem (no return annotation, an unannotated
parameter, an unsupported type, two streaming parameters, a streaming parameter with a plain
return, the reserved name ``with_proto``) raises :class:`orchard.errors.ModelInvalid` when the
class is defined, or, for annotations that name something defined later, when its signatures
are first collected.

A unary method may ask the runner to batch it: ``@ModelClass.method(batch_size=64,
batch_wait_ms=5)``. It is written over lists (each parameter receives one element per input,
and it returns one result per input, in order), and annotated so: ``list[T]`` on every
parameter and on the return. Clients see the per-item signature, the one the same method
without the outer ``list[...]`` would have, so it is called like any unary method::

    class Classifier(ModelClass):
        @ModelClass.method(batch_size=64, batch_wait_ms=5)
        def classify(self, image: list[Image], top: list[int] = 1) -> list[list[Concept]]:
            ...           # clients see classify(image: Image, top: int = 1) -> list[Concept]

A default is each input's default. An element of the returned list that is an ``Exception``
fails that input only (annotate the return ``list[T | Exception]`` to say so; clients see
``T``). How the runner gathers a batch: :mod:`orchard.runners.batching`.
Batching a streaming method (a generator, an ``Iterator[...]`` parameter or return) is a
``ModelInvalid`` too.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import json_format

from orchard import errors
from orchard.runners.utils.method_signatures import (
    EMPTY,
    RETURN,
    Cast,
    Param,
    UnsupportedType,
    build_field,
    split_stream,
)

MethodType = resources_pb2.RunnerMethodType
RESERVED_NAMES = frozenset({"with_proto"})
F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__orchard_params__"
_BATCH = "__orchard_batching__"
_REGISTRY = "__orchard_methods__"
TokenCounts = tuple[int | None, int | None, int | None]  # prompt, completion, cached
_TOKENS: contextvars.ContextVar[list[TokenCounts] | None]
_TOKENS = contextvars.ContextVar("orchard_output_tokens", default=None)


@dataclass(frozen=True)
class ArgSpec:
    """One parameter: its wire field, the cast to its Python type, its default (or EMPTY)."""

    name: str
    field: resources_pb2.ModelTypeField
    cast: Cast | None
    default: Any
    param: Param | None


@dataclass(frozen=True)
class Batching:
    """A batched method's policy: at most ``size`` inputs per call; a batch leaves once it is
    full or its oldest input has waited ``wait_ms`` milliseconds."""

    size: int
    wait_ms: float
    concurrency: int = 1  # batches of the method that may run at once

    @property
    def wait_s(self) -> float:
        return self.wait_ms / 1000


@dataclass(frozen=True)
class MethodInfo:
    """A model method as the dispatcher sees it. ``args`` and the signature are per input,
    also for a batched method (``batch`` set), which is called with a list per parameter."""

    name: str
    signature: resources_pb2.MethodSignature
    args: tuple[ArgSpec, ...]
    is_async: bool
    batch: Batching | None = None

    @property
    def method_type(self) -> int:
        return self.signature.method_type

    @property
    def returns(self) -> resources_pb2.ModelTypeField:
        return self.signature.output_fields[0]

    @property
    def stream_arg(self) -> ArgSpec | None:
        return next((a for a in self.args if a.field.iterator), None)


class ModelClass:
    """Base class of a model; see the module docstring for the shapes of its methods."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _mark_overrides(cls)
        # An annotation naming something defined later is checked again at collection.
        with contextlib.suppress(_Unresolved):
            _collect(cls)

    @overload
    @staticmethod
    def method(func: F, /) -> F: ...

    @overload
    @staticmethod
    def method(
        *,
        batch_size: int | None = None,
        batch_wait_ms: float | None = None,
        max_concurrent_batches: int | None = None,
    ) -> Callable[[F], F]: ...

    @staticmethod
    def method(
        func: F | None = None,
        /,
        *,
        batch_size: int | None = None,
        batch_wait_ms: float | None = None,
        max_concurrent_batches: int | None = None,
    ) -> F | Callable[[F], F]:
        """Expose a method to clients: ``@ModelClass.method``, or
        ``@ModelClass.method(batch_size=N, batch_wait_ms=MS)`` for a unary method written over
        lists that the runner calls with up to ``N`` inputs at once, the first of them having
        waited at most ``MS`` milliseconds (default 0: no waiting beyond the batch running
        before it). ``max_concurrent_batches=K`` (default 1) lets up to ``K`` batches run at
        once, for a call that spends much of its time off the device (decoding, say), so that
        one batch's preparation overlaps another's compute. ``Param`` defaults become their
        plain ``default``."""
        batching = _batching(batch_size, batch_wait_ms, max_concurrent_batches)
        if func is None:
            return lambda f: _expose(f, batching)
        return _expose(func, batching)

    def load_model(self) -> None:
        """Load weights and other state; called once before the first request."""

    def set_output_context(
        self,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int | None = None,
    ) -> None:
        """Token counts for the next output (call once per output, in order)."""
        pending = _TOKENS.get()
        if pending is None:
            pending = []
            _TOKENS.set(pending)
        pending.append((prompt_tokens, completion_tokens, cached_tokens))


def _expose(func: F, batching: Batching | None) -> F:
    if not inspect.isfunction(func):
        hint = " (pass batch_size=... by name)" if isinstance(func, int) else ""
        raise errors.ModelInvalid(
            f"@ModelClass.method decorates a function defined with def or async def in "
            f"the model class; got {func!r} (put @ModelClass.method closest to the def){hint}"
        )
    if batching is not None and (
        inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    ):
        raise errors.ModelInvalid(
            f"{func.__qualname__} yields its results (a streaming method) and asks for "
            f"batch_size={batching.size}; only unary methods can be batched: drop batch_size "
            "and batch_wait_ms, or return a list with one result per input"
        )
    setattr(func, _MARK, _unwrap_params(func))
    if batching is None:
        vars(func).pop(_BATCH, None)
    else:
        setattr(func, _BATCH, batching)
    return func


def _batching(size: Any, wait_ms: Any, concurrency: Any = None) -> Batching | None:
    """The policy asked for in ``@ModelClass.method(...)``, checked."""
    if size is None:
        for name, value in (("batch_wait_ms", wait_ms), ("max_concurrent_batches", concurrency)):
            if value is not None:
                raise errors.ModelInvalid(
                    f"@ModelClass.method({name}={value!r}) needs batch_size too, the most "
                    "inputs per call, e.g. @ModelClass.method(batch_size=32, batch_wait_ms=5)"
                )
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise errors.ModelInvalid(
            f"@ModelClass.method(batch_size={size!r}): batch_size is the most inputs per call, "
            "a whole number of at least 1"
        )
    wait = 0 if wait_ms is None else wait_ms
    if (
        isinstance(wait, bool)
        or not isinstance(wait, int | float)
        or not math.isfinite(wait)
        or wait < 0
    ):
        raise errors.ModelInvalid(
            f"@ModelClass.method(batch_wait_ms={wait_ms!r}): batch_wait_ms is how long the "
            "first input of a batch may wait for others, in milliseconds, 0 or more"
        )
    runs = 1 if concurrency is None else concurrency
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise errors.ModelInvalid(
            f"@ModelClass.method(max_concurrent_batches={concurrency!r}): how many batches of "
            "the method may run at once, a whole number of at least 1"
        )
    return Batching(size, float(wait), runs)


def begin_output_context(counts: TokenCounts | None = None) -> None:
    """Start a call: token counts set from here on belong to its outputs (``counts``, set
    for the next output elsewhere, e.g. during a batch, come first)."""
    _TOKENS.set([] if counts is None else [counts])


def take_output_context() -> TokenCounts | None:
    """The token counts the model set for the next output, if any."""
    pending = _TOKENS.get()
    return pending.pop(0) if pending else None


def model_type(model: type[ModelClass] | ModelClass) -> type[ModelClass]:
    return model if isinstance(model, type) else type(model)


def method_infos(model: type[ModelClass] | ModelClass) -> dict[str, MethodInfo]:
    """The model's methods by name, in definition order (base classes first); cached."""
    cls = model_type(model)
    cached = cls.__dict__.get(_REGISTRY)
    if cached is not None:
        return cached
    try:
        return _collect(cls)
    except _Unresolved as exc:
        raise errors.ModelInvalid(str(exc)) from None


def signatures(model: type[ModelClass] | ModelClass) -> list[resources_pb2.MethodSignature]:
    """The ``MethodSignature`` of every model method, as stored on a model version."""
    infos = method_infos(model)
    if not infos:
        raise errors.ModelInvalid(
            f"{model_type(model).__name__} has no model methods; decorate at least one "
            "method with @ModelClass.method"
        )
    return [info.signature for info in infos.values()]


def signatures_json(model: type[ModelClass] | ModelClass) -> str:
    """``{name: signature as proto JSON}``: the ``_GET_SIGNATURES`` answer of the official SDK."""
    return json.dumps(
        {i.name: json_format.MessageToDict(i.signature) for i in method_infos(model).values()}
    )


# -- collection ----------------------------------------------------------------------------


class _Unresolved(Exception):
    """An annotation that names something not (yet) defined (retried at collection)."""


def _collect(cls: type) -> dict[str, MethodInfo]:
    infos = {name: _analyze(cls, name) for name in _method_names(cls)}
    setattr(cls, _REGISTRY, infos)
    return infos


def _unwrap_params(func: Callable[..., Any]) -> dict[str, Param]:
    params = {
        p.name: p.default
        for p in inspect.signature(func).parameters.values()
        if isinstance(p.default, Param)
    }
    if func.__defaults__:
        func.__defaults__ = tuple(_plain(d) for d in func.__defaults__)
    if func.__kwdefaults__:
        func.__kwdefaults__ = {k: _plain(v) for k, v in func.__kwdefaults__.items()}
    return params


def _plain(default: Any) -> Any:
    return default.default if isinstance(default, Param) else default


def _method_names(cls: type) -> list[str]:
    names: dict[str, None] = {}
    for base in reversed(cls.__mro__):
        names.update((n, None) for n, v in vars(base).items() if _is_marked(v))
    return list(names)


def _is_marked(value: Any) -> bool:
    """A function decorated with ``@ModelClass.method`` (mocks and other objects are not)."""
    return inspect.isfunction(value) and _MARK in vars(value)


def _mark_overrides(cls: type) -> None:
    """An override of a model method, decorated or not, is still a model method."""
    inherited = {n for base in cls.__mro__[1:] for n, v in vars(base).items() if _is_marked(v)}
    for name in inherited & set(vars(cls)):
        value = vars(cls)[name]
        if inspect.isfunction(value) and not _is_marked(value):
            _expose(value, _inherited_batching(cls, name))


def _inherited_batching(cls: type, name: str) -> Batching | None:
    """The batching of the nearest base's ``name`` (an undecorated override keeps it)."""
    for base in cls.__mro__[1:]:
        value = vars(base).get(name)
        if _is_marked(value):
            return vars(value).get(_BATCH)
    return None


def _analyze(cls: type, name: str) -> MethodInfo:
    where = f"{cls.__name__}.{name}"
    try:
        return _read_method(cls, name, where)
    except NameError as exc:
        raise _Unresolved(
            f"{where}: an annotation names something undefined ({exc}); define or import it "
            "before the model's signatures are collected"
        ) from None


def _read_method(cls: type, name: str, where: str) -> MethodInfo:
    func = _definition(cls, name)
    sig = _signature(cls, func, where)
    if sig.return_annotation is EMPTY:
        raise errors.ModelInvalid(
            f"{where} has no return annotation; annotate what it returns, e.g. `-> str`, "
            "or `-> Iterator[str]` for a stream of results"
        )
    params: Mapping[str, Param] = getattr(func, _MARK, {})
    parameters = list(sig.parameters.values())[1:]
    returned = sig.return_annotation
    batch: Batching | None = vars(func).get(_BATCH)
    if batch is not None:
        parameters = [p.replace(annotation=_per_input(where, batch, p)) for p in parameters]
        returned = _per_input(where, batch, None, returned)
    args = tuple(_arg_spec(where, p, params.get(p.name)) for p in parameters)
    returns = _return_field(where, returned)
    signature = resources_pb2.MethodSignature(
        name=name,
        method_type=_method_type(where, args, returns.iterator),
        description=inspect.cleandoc(func.__doc__ or ""),
        input_fields=[a.field for a in args],
        output_fields=[returns],
    )
    if batch is not None:
        _check_batched(where, batch, signature, args)
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    return MethodInfo(name=name, signature=signature, args=args, is_async=is_async, batch=batch)


def _definition(cls: type, name: str) -> Callable[..., Any]:
    """The most derived definition of ``name`` (a plain function)."""
    for base in cls.__mro__:
        if name in vars(base):
            return vars(base)[name]
    raise AttributeError(name)


def _signature(cls: type, func: Callable[..., Any], where: str) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True, locals=dict(vars(cls)))
    except NameError:
        raise
    except Exception as exc:
        raise errors.ModelInvalid(f"{where}: cannot read the annotations ({exc})") from None


def _arg_spec(where: str, p: inspect.Parameter, param: Param | None) -> ArgSpec:
    _check_parameter(where, p)
    try:
        field, cast, _ = build_field(p.name, p.annotation, p.default, param)
    except UnsupportedType as exc:
        raise errors.ModelInvalid(f"parameter {p.name!r} of {where}: {exc}") from None
    if param is not None and param.default is not None:
        problem = param.problem(param.default)
        if problem:
            raise errors.ModelInvalid(
                f"parameter {p.name!r} of {where}: the default {problem}; fix the Param"
            )
    return ArgSpec(p.name, field, cast, p.default, param)


def _check_parameter(where: str, p: inspect.Parameter) -> None:
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
        raise errors.ModelInvalid(
            f"{where} takes {p}; model methods take named parameters only, each annotated "
            "(clients pass arguments by name)"
        )
    if p.name in RESERVED_NAMES:
        raise errors.ModelInvalid(
            f"parameter {p.name!r} of {where} uses a reserved name (clients pass it to ask "
            "for the raw response); rename the parameter"
        )
    if p.annotation is EMPTY:
        raise errors.ModelInvalid(
            f"parameter {p.name!r} of {where} has no type annotation; annotate it, "
            f"e.g. `{p.name}: str`"
        )


def _return_field(where: str, annotation: Any) -> resources_pb2.ModelTypeField:
    try:
        return build_field(RETURN, annotation)[0]
    except UnsupportedType as exc:
        raise errors.ModelInvalid(f"the return annotation of {where}: {exc}") from None


def _per_input(
    where: str, batch: Batching, p: inspect.Parameter | None, annotation: Any = EMPTY
) -> Any:
    """``T`` for the ``list[T]`` annotation of a batched method's parameter ``p`` (or of its
    return, when ``p`` is None): what one input carries, as clients see it."""
    if p is not None:
        annotation = p.annotation
        if annotation is EMPTY:
            return annotation  # reported, with the usual message, by _check_parameter
    what = f"parameter {p.name!r} of {where}" if p is not None else f"the return of {where}"
    if split_stream(annotation)[1]:
        raise errors.ModelInvalid(
            f"{what} is a stream, and {where} asks for batch_size={batch.size}; only unary "
            "methods can be batched: drop batch_size and batch_wait_ms, or take and return lists"
        )
    if typing.get_origin(annotation) is list and len(typing.get_args(annotation)) == 1:
        item = typing.get_args(annotation)[0]
        return item if p is not None else _without_exceptions(item)
    example = f"{p.name}: list[str]" if p is not None else "-> list[str]"
    raise errors.ModelInvalid(
        f"{what} is annotated {inspect.formatannotation(annotation)}, but a batched method "
        f"(batch_size={batch.size}) takes a list per parameter and returns a list, one element "
        f"per input: annotate it list[T], with T what one input carries (e.g. `{example}`); "
        "clients see T"
    )


def _without_exceptions(annotation: Any) -> Any:
    """``T`` for ``T | Exception``: a batched method fails one input by putting an exception
    in its place, and may say so in its return annotation."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation
    members = typing.get_args(annotation)
    kept = [m for m in members if not (isinstance(m, type) and issubclass(m, BaseException))]
    if len(kept) == len(members) or not kept:
        return annotation
    return kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]  # noqa: UP007


def _check_batched(
    where: str,
    batch: Batching,
    signature: resources_pb2.MethodSignature,
    args: tuple[ArgSpec, ...],
) -> None:
    if signature.method_type != MethodType.UNARY_UNARY:
        raise errors.ModelInvalid(
            f"{where} is {MethodType.Name(signature.method_type)} and asks for "
            f"batch_size={batch.size}; only unary methods can be batched: drop batch_size and "
            "batch_wait_ms, or take and return lists"
        )
    if not args:
        raise errors.ModelInvalid(
            f"{where} asks for batch_size={batch.size} but takes no parameters; a batched "
            "method takes at least one (a list with one element per input)"
        )


def _method_type(where: str, args: tuple[ArgSpec, ...], streams_out: bool) -> int:
    streams_in = [a.name for a in args if a.field.iterator]
    if len(streams_in) > 1:
        raise errors.ModelInvalid(
            f"{where} has {len(streams_in)} streaming parameters {streams_in}; a method takes "
            "at most one Iterator[...] parameter (put the other values in NamedFields)"
        )
    if streams_in and not streams_out:
        raise errors.ModelInvalid(
            f"{where} takes a stream (parameter {streams_in[0]!r}) but does not return one; "
            "annotate the return as Iterator[...] and yield the results"
        )
    if streams_in:
        return MethodType.STREAMING_STREAMING
    return MethodType.UNARY_STREAMING if streams_out else MethodType.UNARY_UNARY
