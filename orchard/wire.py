"""The wire: the ``clarifai.api.V2`` service description from the clarifai-grpc package.

The package's generated ``V2Stub`` needs a process-wide hook that only its own channel factory
sets, so Orchard builds callables straight from the service descriptor instead.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import grpc
from clarifai_grpc.grpc.api import service_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

SERVICE = service_pb2.DESCRIPTOR.services_by_name["V2"]


@cache
def method(name: str) -> MethodDescriptor:
    try:
        return SERVICE.methods_by_name[name]
    except KeyError:
        raise ValueError(f"{name} is not a method of {SERVICE.full_name}") from None


def request_class(name: str) -> Any:
    return message_factory.GetMessageClass(method(name).input_type)


def response_class(name: str) -> Any:
    return message_factory.GetMessageClass(method(name).output_type)


def callable_for(channel: grpc.Channel, name: str) -> Any:
    """A multi-callable for ``name`` on ``channel`` (sync or aio), of the method's shape."""
    desc = method(name)
    path = f"/{SERVICE.full_name}/{name}"
    kwargs = {
        "request_serializer": request_class(name).SerializeToString,
        "response_deserializer": response_class(name).FromString,
    }
    if desc.client_streaming and desc.server_streaming:
        return channel.stream_stream(path, **kwargs)
    if desc.client_streaming:
        return channel.stream_unary(path, **kwargs)
    if desc.server_streaming:
        return channel.unary_stream(path, **kwargs)
    return channel.unary_unary(path, **kwargs)
