"""RPC plumbing: authentication, the error mapping, and "not implemented" for the rest.

Every method of the ``clarifai.api.V2`` service gets a handler. Methods Orchard implements are
registered on a :class:`Router` by the per-resource modules (``orchard.server.<noun>``):

- a **unary** handler is a short sync function ``(request, call) -> response`` that parses,
  authorizes, converts and calls one service function. It runs in a worker thread with one
  database session, which is committed on success and rolled back on error;
- a **stream** handler is an async generator ``(requests, call) -> responses`` for the
  bidirectional RPCs (uploads); it runs on the event loop and does its database work in
  transactions of its own through :meth:`StreamCall.db`.

Errors become the response's ``status`` here and only here: an
:class:`~orchard.errors.OrchardError` keeps its code and message; any other exception is
logged with a request id and answered as "internal error (request id ...)". A stream ends
with that one status message.

A request message that does not parse is not a request of the API: it is answered with gRPC
``INVALID_ARGUMENT`` (a stream: its input ends there and the call ends so), before anything
else is done with the call, with a text that names the message type and nothing of the
server's internals; such refusals are logged at most once a minute, with how many there were.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from orchard import errors
from orchard.ids import names_caller
from orchard.providers import ProviderRegistry
from orchard.quotas import Quotas
from orchard.services import users
from orchard.store import Store
from orchard.wire import SERVICE

if TYPE_CHECKING:  # the parts themselves import this module
    from orchard.dispatch.dispatcher import Dispatcher
    from orchard.orchestration.reconciler import Orchestrator
    from orchard.orchestration.view import LiveView
    from orchard.server.builds import BuildQueue
    from orchard.server.metrics import Metrics
    from orchard.server.predictions import UrlFetcher
    from orchard.services.packages import PackageStore

log = logging.getLogger(__name__)
MUTATING = ("Post", "Patch", "Delete")
DEFAULT_DEADLINE = 600.0  # seconds a streaming call may run when its client sets no deadline
RUNNER_STREAM = "ProcessRunnerItems"  # the one call a replica token may make
T = TypeVar("T")
MALFORMED_LOG_SECONDS = 60.0  # malformed requests are logged at most this often


class Memo:
    """Answers the hot path may reuse: valid for ``ttl`` seconds and until the next change
    (any successful Post*, Patch* or Delete* call), whichever comes first."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._entries: dict[Any, tuple[Any, float]] = {}

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: Any, value: Any) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (value, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class Runtime:
    """The server's long-lived parts that handlers reach."""

    providers: ProviderRegistry
    packages: PackageStore
    builds: BuildQueue
    dispatcher: Dispatcher
    fetcher: UrlFetcher
    metrics: Metrics
    orchestrator: Orchestrator | None = None  # None: this server does not orchestrate
    quotas: Quotas = field(default_factory=Quotas)  # the operator's, per user
    memo: Memo = field(default_factory=Memo)
    # Tokens the server gave the replicas it started: each authenticates its user's
    # ProcessRunnerItems stream only, and only while this server process lives.
    replica_tokens: dict[str, str] = field(default_factory=dict)
    # The official runner's control calls, by (user, runner, replica): where its cancels go.
    runner_controls: dict[tuple[str, str, str], Callable[[Message], object]] = field(
        default_factory=dict
    )

    def changed(self) -> None:
        """Something in the store changed: forget every remembered answer, and let the
        orchestrator look at the new state now."""
        self.memo.clear()
        if self.orchestrator is not None:
            self.orchestrator.wake()


_PROCESS_ID = secrets.token_hex(4)
_requests = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits: this process's random half, then a count (no entropy read per call)."""
    return f"{_PROCESS_ID}{next(_requests) & 0xFFFFFFFF:08x}"


def resolve_owner(caller: str, requested: str) -> str:
    """The user whose resources a request names; only the caller's own are reachable, and
    another user's id answers "not found" whether that user exists or not."""
    if names_caller(requested, caller):
        return caller
    raise errors.UserNotFound(
        f"user {requested!r} not found or not accessible with this PAT; your user id is {caller!r}"
    )


@dataclass
class Call:
    """One authenticated unary call: who is calling, and the session it runs in."""

    user_id: str
    request_id: str
    session: Session
    runtime: Runtime

    @property
    def providers(self) -> ProviderRegistry:
        return self.runtime.providers

    @property
    def live(self) -> LiveView | None:
        """What the orchestrator last saw, or None when this server does not orchestrate."""
        orchestrator = self.runtime.orchestrator
        return orchestrator.view if orchestrator is not None else None

    def owner(self, requested: str) -> str:
        return resolve_owner(self.user_id, requested)


@dataclass
class StreamCall:
    """One authenticated streaming call; database work goes through :meth:`db`."""

    user_id: str
    request_id: str
    runtime: Runtime
    adapter: GrpcAdapter
    deadline: float  # time.monotonic() by which the caller wants its answer
    # A transport that writes without waiting (the runners' local link) may take the
    # handler's messages at once through this; None: the handler yields them.
    deliver: Callable[[Message], object] | None = None

    def owner(self, requested: str) -> str:
        return resolve_owner(self.user_id, requested)

    async def db(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction on a worker thread."""
        return await self.adapter.in_session(work)


Handler = Callable[[Any, Call], Message]
StreamHandler = Callable[[AsyncIterator[Any], StreamCall], AsyncIterator[Message]]


class Router:
    """Handlers by RPC name."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.stream_handlers: dict[str, StreamHandler] = {}

    @staticmethod
    def _check(name: str) -> None:
        if name not in SERVICE.methods_by_name:
            raise ValueError(f"{name} is not a method of clarifai.api.V2")

    def rpc(self, name: str) -> Callable[[Handler], Handler]:
        self._check(name)

        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    def stream(self, name: str) -> Callable[[StreamHandler], StreamHandler]:
        self._check(name)

        def register(fn: StreamHandler) -> StreamHandler:
            self.stream_handlers[name] = fn
            return fn

        return register

    def include(self, other: Router) -> None:
        self.handlers.update(other.handlers)
        self.stream_handlers.update(other.stream_handlers)

    def served(self) -> set[str]:
        return set(self.handlers) | set(self.stream_handlers)


class RateLimitedLog:
    """Warnings of one kind, at most one per ``every`` seconds (``clock`` is injected); the
    next warning logged says how many were left out since the last one."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self._next = float("-inf")
        self.left_out = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log ``message % args`` unless one was logged less than ``every`` seconds ago;
        True when it was logged."""
        now = self.clock()
        if now < self._next:
            self.left_out += 1
            return False
        if self.left_out:
            message += f" ({self.left_out} more like it in the last {self.every:g} s not logged)"
        self.logger.warning(message, *args)
        self._next, self.left_out = now + self.every, 0
        return True


class Malformed:
    """What the request deserializer gives in place of bytes that are not the method's request
    message; ``error`` is the parser's exception class, for the log only."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """A request deserializer that never raises: a message that does not parse becomes a
    :class:`Malformed` for the handler to refuse (a raise here would be logged by grpc with
    its traceback and answered UNKNOWN with the exception's name)."""

    def parse(data: bytes) -> Message | Malformed:
        try:
            return cls.FromString(data)
        except Exception as exc:  # DecodeError, or whatever a hostile message makes upb raise
            return Malformed(type(exc).__name__)

    return parse


def _with_status(response: Message, request_id: str) -> Message:
    """``response``, answering SUCCESS when its handler set no status."""
    v2_response: Any = response  # every V2 response has a status; Message does not say so
    if not v2_response.HasField("status"):
        v2_response.status.CopyFrom(success(request_id))
    return response


def _answer(method: MethodDescriptor, status: status_pb2.Status) -> Message:
    """The method's response carrying only ``status``."""
    response_cls: Callable[..., Message] = _classes(method)[1]
    return response_cls(status=status)


def success(request_id: str) -> status_pb2.Status:
    return status_pb2.Status(code=status_code_pb2.SUCCESS, description="Ok", req_id=request_id)


def token_of(metadata: Sequence[tuple[str, Any]]) -> str:
    """The PAT of ``authorization: Key <PAT>`` (or ``Bearer <PAT>``) in a call's metadata."""
    for key, value in metadata:
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() in ("key", "bearer") and token.strip():
                return token.strip()
    raise errors.AuthenticationError(
        "no credentials: send the metadata 'authorization: Key <PAT>' (either SDK does this "
        "from pat=, ORCHARD_PAT or CLARIFAI_PAT, or after `orchard login` or `clarifai login`)"
    )


def _classes(method: MethodDescriptor) -> tuple[type[Message], type[Message]]:
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


class GrpcAdapter:
    """Turns the router's handlers into grpc.aio method handlers for the whole service."""

    def __init__(self, router: Router, store: Store, runtime: Runtime, workers: int = 8) -> None:
        self.router = router
        self.store = store
        self.runtime = runtime
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orchard-rpc")
        self.malformed_log = RateLimitedLog(log, MALFORMED_LOG_SECONDS)

    async def in_session(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.store.session() as session:
                return work(session)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def authenticate(self, token: str) -> str:
        """The PAT's user, remembered for a few seconds (and forgotten on any change)."""
        key = users.hash_token(token)
        cached = self.runtime.memo.get(("pat", key))
        if cached is not None:
            return str(cached)
        user_id = await self.in_session(lambda session: users.authenticate(session, token))
        self.runtime.memo.put(("pat", key), user_id)
        return user_id

    def _error_status(self, exc: BaseException, method: str, request_id: str) -> status_pb2.Status:
        if isinstance(exc, errors.OrchardError):
            exc.req_id = request_id
            return exc.to_status()
        log.error("internal error in %s (request id %s)", method, request_id, exc_info=exc)
        return errors.InternalError(
            f"internal error (request id {request_id}); the server log has the details",
            req_id=request_id,
        ).to_status()

    async def serve_unary(
        self, name: str, request: Message, metadata: Sequence[tuple[str, Any]]
    ) -> Message:
        """The response of unary handler ``name`` to ``request`` from the caller that
        ``metadata`` authenticates; any error is the response's status. The one entry of
        every unary call, whatever carried it (gRPC or HTTP)."""
        method = SERVICE.methods_by_name[name]
        handler = self.router.handlers[name]
        request_id = new_request_id()
        try:
            token = token_of(metadata)

            def run(session: Session) -> Message:
                call = Call(users.authenticate(session, token), request_id, session, self.runtime)
                return handler(request, call)

            response = _with_status(await self.in_session(run), request_id)
            if name.startswith(MUTATING):
                self.runtime.changed()
            return response
        except Exception as exc:
            return _answer(method, self._error_status(exc, name, request_id))

    async def serve_stream(
        self,
        name: str,
        requests: AsyncIterator[Any],
        metadata: Sequence[tuple[str, Any]],
        remaining: float | None = None,
        deliver: Callable[[Message], object] | None = None,
    ) -> AsyncGenerator[Message, None]:
        """The responses of stream handler ``name`` to ``requests`` from the caller that
        ``metadata`` authenticates, with ``remaining`` seconds to run (None: the default);
        any error is the last response's status. The one entry of every streaming call,
        whatever carried it (gRPC, or the runners' local link, which passes ``deliver``)."""
        method = SERVICE.methods_by_name[name]
        handler = self.router.stream_handlers[name]
        request_id = new_request_id()
        try:
            token = token_of(metadata)
            replica_user = self.runtime.replica_tokens.get(token)
            if replica_user is not None and name == RUNNER_STREAM:
                user_id = replica_user
            else:
                user_id = await self.authenticate(token)
            deadline = time.monotonic() + (remaining if remaining is not None else DEFAULT_DEADLINE)
            call = StreamCall(user_id, request_id, self.runtime, self, deadline, deliver)
            async for response in handler(requests, call):
                yield response
        except Exception as exc:
            yield _answer(method, self._error_status(exc, name, request_id))

    async def responses(
        self,
        name: str,
        request: Message,
        metadata: Sequence[tuple[str, Any]],
        remaining: float | None = None,
    ) -> AsyncGenerator[Message, None]:
        """The responses of RPC ``name`` to one ``request``, whatever its handler's kind: one
        for a unary RPC, the stream's for a server-streaming one, and "not implemented" for
        an RPC Orchard does not serve. The entry of transports that carry single requests
        (HTTP)."""
        method = SERVICE.methods_by_name[name]
        if name in self.router.handlers:
            yield await self.serve_unary(name, request, metadata)
        elif name in self.router.stream_handlers:
            async for response in self.serve_stream(name, _one(request), metadata, remaining):
                yield response
        else:
            yield _answer(method, _not_implemented_status(method))

    def _refuse_malformed(
        self, method: MethodDescriptor, request: Malformed, context: grpc.aio.ServicerContext
    ) -> str:
        """Set the call's status to INVALID_ARGUMENT for a request that did not parse, and log
        it (rate-limited); returns the status text."""
        self.malformed_log.warning(
            "refused a malformed %s request from %s (%s)",
            method.name,
            context.peer(),
            request.error,
        )
        details = (
            f"the request is not a valid {method.input_type.full_name} message; "
            "send one serialized with the clarifai-grpc protobufs"
        )
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details(details)
        return details

    async def _abort_if_malformed(
        self, method: MethodDescriptor, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        """End the call with INVALID_ARGUMENT when its one request did not parse."""
        if isinstance(request, Malformed):
            details = self._refuse_malformed(method, request, context)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details)

    async def _parsed(
        self, method: MethodDescriptor, requests: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """A stream's requests up to the first that did not parse, which ends the input and
        sets the call's status to INVALID_ARGUMENT."""
        async for request in requests:
            if isinstance(request, Malformed):
                self._refuse_malformed(method, request, context)
                return
            yield request

    def _not_implemented(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        def answer() -> Message:
            return _answer(method, _not_implemented_status(method))

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Message:
            return answer()

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Message]:
            yield answer()

        return _method_handler(method, unary, streaming)

    def _served(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        if method.name in self.router.handlers:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Message:
                await self._abort_if_malformed(method, request, context)
                metadata = context.invocation_metadata() or ()
                return await self.serve_unary(method.name, request, metadata)

            return _method_handler(method, unary, None)

        # A stream handler serves every shape: a single request is a stream of one, and a
        # single response is the stream's last.
        def answers(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            requests = _one(requests) if not method.client_streaming else requests
            requests = self._parsed(method, requests, context)
            metadata = context.invocation_metadata() or ()
            return self.serve_stream(method.name, requests, metadata, context.time_remaining())

        async def responses(  # grpc.aio streams only an async generator function's responses
            requests: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Message]:
            await self._abort_if_malformed(method, requests, context)
            async for response in answers(requests, context):
                yield response

        async def last(requests: Any, context: grpc.aio.ServicerContext) -> Message:
            await self._abort_if_malformed(method, requests, context)
            answer: Message | None = None
            async for response in answers(requests, context):
                answer = response
            assert answer is not None  # every stream ends with a response: its answer, or the error
            return answer

        return _method_handler(method, last, responses)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        served = self.router.served()
        handlers = {
            m.name: self._served(m) if m.name in served else self._not_implemented(m)
            for m in SERVICE.methods
        }
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _not_implemented_status(method: MethodDescriptor) -> status_pb2.Status:
    return errors.NotImplementedByOrchard(
        f"{method.name} is not implemented by Orchard; "
        "see docs/ARCHITECTURE.md for the RPCs it serves"
    ).to_status()


async def _one(request: Any) -> AsyncIterator[Any]:
    yield request


def _method_handler(method: MethodDescriptor, unary: Any, streaming: Any) -> grpc.RpcMethodHandler:
    """A grpc method handler of the method's shape (stream handlers serve bidi methods)."""
    request_cls, response_cls = _classes(method)
    kwargs = {
        "request_deserializer": _lenient(request_cls),
        "response_serializer": response_cls.SerializeToString,
    }
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
