"""Registers servicers as the generated add_*_to_server functions do, but with request deserializers that
never raise. Bytes that are not a valid message of the method's type (garbage on the wire, invalid UTF-8
in a string field) reach the servicer as `Undecodable`, and the rpc wrapper answers INVALID_ARGUMENT
naming the message; grpc's own deserializer failure would be an INTERNAL error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import grpc
from google.protobuf import message, message_factory


@dataclass(frozen=True, slots=True)
class Undecodable:
    message_type: str
    error: str


def _tolerant(cls: type[message.Message]) -> Callable[[bytes], message.Message | Undecodable]:
    def parse(data: bytes) -> message.Message | Undecodable:
        try:
            return cls.FromString(data)
        except Exception as e:  # DecodeError, or a UTF-8 error from a string field
            return Undecodable(cls.DESCRIPTOR.full_name, str(e) or type(e).__name__)

    return parse


def add_servicer(server: grpc.aio.Server, servicer: object, pb2: ModuleType, service: str) -> None:
    descriptor = pb2.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)
