"""gRPC side of `--api-keys`: an interceptor refuses a call before its handler runs when its key is missing,
unknown (UNAUTHENTICATED) or may not call the service (PERMISSION_DENIED). The check itself is
server/api_keys.py, which the HTTP routes call too. Installed only when keys are configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from server import metrics
from server.api_keys import ApiKeys
from server.errors import SiftError
from server.transport.status import status_of


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        service = details.method.split("/")[1] if details.method.count("/") == 2 else details.method
        authorization = next((v for k, v in details.invocation_metadata or () if k == "authorization"), None)
        try:
            self._keys.check(authorization, service)
        except SiftError as e:
            handler = await continuation(details)
            if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED as usual
                return handler
            code = status_of(e)
            metrics.AUTH_REFUSED.labels(code=code.name).inc()
            return _refusal(handler, code, str(e))
        return await continuation(details)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` (unary or streaming) that answers `code` at once."""

    async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
