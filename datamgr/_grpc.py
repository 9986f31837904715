"""The one table from domain errors to gRPC status codes, and the servicer-side helpers around it.

`@rpc` wraps a servicer method (unary or server-streaming): a DatamgrError becomes its status code with
its message; anything else is a bug, logged with its traceback and returned as INTERNAL without one.
`authenticate` is the app an app-facing servicer's caller is, from its bearer token.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from datamgr import tenant
from datamgr.errors import DatamgrError, Unauthenticated

if TYPE_CHECKING:
    from datamgr.apps import App, AppRegistry

log = logging.getLogger("datamgr.rpc")

STATUS: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "CANCELLED": grpc.StatusCode.CANCELLED,
    "UNIMPLEMENTED": grpc.StatusCode.UNIMPLEMENTED,
}


def token_in(metadata: Any) -> str | None:
    """The bearer token in a call's metadata ('authorization: Bearer <token>'), None without one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return None


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    return token_in(context.invocation_metadata())


def authenticate(apps: AppRegistry, context: grpc.aio.ServicerContext) -> App:
    """The app whose token the call carries; Unauthenticated without one or for an unknown one."""
    token = bearer_token(context)
    if token is None:
        raise Unauthenticated("no app token: send metadata 'authorization: Bearer <token>'")
    app = apps.authenticate(token)
    tenant.enter(app.bundle)  # the rest of the call is this app's (its turn on the database threads)
    return app


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, name: str) -> None:
    if isinstance(exc, DatamgrError):
        await context.abort(STATUS.get(exc.code, grpc.StatusCode.UNKNOWN), exc.message)
    log.error("bug in %s", name, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name} (details in the daemon log)")


def rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Maps domain errors to statuses for an async servicer method or async-generator method."""
    name = fn.__name__
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                await _abort(context, exc, name)

        return stream

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, name)

    return unary
