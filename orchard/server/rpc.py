"""RPC plumbing: authentication, the error mapping, and "not implemented" for the rest.

Every method of the ``clarifai.api.V2`` service gets a handler. Methods Orchard implements are
registered on a :class:`Router` by the per-resource modules (``orchard.server.<noun>``); each
is a short sync function ``(request, call) -> response`` that parses, authorizes, converts and
calls one service function. It runs in a worker thread with one database session, which the
wrapper commits on success and rolls back on error. Errors become the response's ``status``
here and only here: an :class:`~orchard.errors.OrchardError` keeps its code and message; any
other exception is logged with a request id and answered as "internal error (request id ...)".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from orchard import errors
from orchard.providers import ProviderRegistry
from orchard.services import users
from orchard.store import Store
from orchard.wire import SERVICE

log = logging.getLogger(__name__)
ME = "me"


@dataclass
class Call:
    """One authenticated call: who is calling, and the session it runs in."""

    user_id: str
    request_id: str
    session: Session
    providers: ProviderRegistry

    def owner(self, requested: str) -> str:
        """The user whose resources a request names; only the caller's own are reachable,
        and another user's id answers "not found" whether that user exists or not."""
        if requested in ("", ME, self.user_id):
            return self.user_id
        raise errors.UserNotFound(
            f"user {requested!r} not found or not accessible with this PAT; "
            f"your user id is {self.user_id!r}"
        )


Handler = Callable[[Any, Call], Message]


class Router:
    """Handlers by RPC name."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def rpc(self, name: str) -> Callable[[Handler], Handler]:
        if name not in SERVICE.methods_by_name:
            raise ValueError(f"{name} is not a method of clarifai.api.V2")

        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    def include(self, other: Router) -> None:
        self.handlers.update(other.handlers)


def success(request_id: str) -> status_pb2.Status:
    return status_pb2.Status(code=status_code_pb2.SUCCESS, description="Ok", req_id=request_id)


def _token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() in ("key", "bearer") and token.strip():
                return token.strip()
    raise errors.AuthenticationError(
        "no credentials: send the metadata 'authorization: Key <PAT>' (the SDK does this "
        "from pat=, ORCHARD_PAT or `orchard login`)"
    )


class Dispatcher:
    """Turns the router's sync handlers into grpc.aio method handlers for the whole service."""

    def __init__(
        self, router: Router, store: Store, providers: ProviderRegistry, workers: int = 8
    ) -> None:
        self.router = router
        self.store = store
        self.providers = providers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orchard-rpc")

    def _run(self, handler: Handler, request: Message, token: str, request_id: str) -> Message:
        with self.store.session() as session:
            user_id = users.authenticate(session, token)
            return handler(request, Call(user_id, request_id, session, self.providers))

    async def _unary(
        self, method: MethodDescriptor, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        response_cls = message_factory.GetMessageClass(method.output_type)
        request_id = uuid.uuid4().hex[:16]
        handler = self.router.handlers[method.name]
        try:
            token = _token(context)
            loop = asyncio.get_running_loop()
            response: Any = await loop.run_in_executor(
                self.executor, self._run, handler, request, token, request_id
            )
            if not response.HasField("status"):
                response.status.CopyFrom(success(request_id))
            return response
        except errors.OrchardError as exc:
            exc.req_id = request_id
            return response_cls(status=exc.to_status())
        except Exception:
            log.exception("internal error in %s (request id %s)", method.name, request_id)
            return response_cls(
                status=errors.InternalError(
                    f"internal error (request id {request_id}); the server log has the details",
                    req_id=request_id,
                ).to_status()
            )

    def _not_implemented(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        response_cls = message_factory.GetMessageClass(method.output_type)
        request_cls = message_factory.GetMessageClass(method.input_type)

        def answer() -> Message:
            return response_cls(
                status=errors.NotImplementedByOrchard(
                    f"{method.name} is not implemented by Orchard; "
                    "see docs/ARCHITECTURE.md for the RPCs it serves"
                ).to_status()
            )

        async def unary(request: Message, context: grpc.aio.ServicerContext) -> Message:
            return answer()

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Message]:
            yield answer()

        kwargs = {
            "request_deserializer": request_cls.FromString,
            "response_serializer": response_cls.SerializeToString,
        }
        if method.client_streaming and method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in SERVICE.methods:
            if method.name in self.router.handlers:
                handlers[method.name] = self._unary_handler(method)
            else:
                handlers[method.name] = self._not_implemented(method)
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)

    def _unary_handler(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)

        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            return await self._unary(method, request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=request_cls.FromString,
            response_serializer=response_cls.SerializeToString,
        )

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
