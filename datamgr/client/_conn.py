"""Channels to the daemon and the mapping of gRPC errors back to datamgr's error classes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from datamgr.client import _tls
from datamgr.errors import BY_CODE, DatamgrError

T = TypeVar("T")
MAX_MESSAGE = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


def open_channel(
    address: str | None, tls_fingerprint: str | None = None, options: list[Any] | None = None
) -> grpc.Channel:
    """A blocking channel to the daemon at `address` (default: `default_address()`): the Unix socket,
    or TCP; TLS pinned to `tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT) when one is given, see
    `datamgr.client._tls`. Plaintext TCP only to a loopback address."""
    target = address or default_address()
    credentials, extra = _tls.channel_args(target, tls_fingerprint)
    opts = [*(CHANNEL_OPTIONS if options is None else options), *extra]
    if credentials is None:
        return grpc.insecure_channel(target, options=opts)
    return grpc.secure_channel(target, credentials, options=opts)


def open_aio_channel(
    address: str | None, tls_fingerprint: str | None = None, options: list[Any] | None = None
) -> grpc.aio.Channel:
    """`open_channel` for asyncio. With a fingerprint it fetches the certificate first: a blocking
    TLS handshake of a few milliseconds, at most 5 s."""
    target = address or default_address()
    credentials, extra = _tls.channel_args(target, tls_fingerprint)
    opts = [*(CHANNEL_OPTIONS if options is None else options), *extra]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=opts)
    return grpc.aio.secure_channel(target, credentials, options=opts)


def default_address() -> str:
    """`DATAMGR_ADDRESS`, else the daemon's Unix socket from the settings (DATAMGR_DATA_DIR, ...)."""
    address = os.environ.get("DATAMGR_ADDRESS")
    if address:
        return address
    from datamgr.config import load_settings

    return f"unix:{load_settings().socket_path}"


def resolve_token(token: str | None) -> str:
    token = token or os.environ.get("DATAMGR_TOKEN")
    if not token:
        raise DatamgrError("no app token: pass token=... or set DATAMGR_TOKEN")
    return token


def admin_token(token: str | None, token_path: Path | None = None) -> str:
    """`token` if given, else the admin token read from `token_path` (by default the one in the
    daemon's data directory)."""
    if token is not None:
        return token
    from datamgr.apps import read_admin_token

    if token_path is None:
        from datamgr.config import load_settings

        token_path = load_settings().admin_token_path
    return read_admin_token(token_path)


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def error_from_rpc(exc: grpc.RpcError) -> DatamgrError:
    """The datamgr error for a failed call: InvalidArgument for INVALID_ARGUMENT, and so on."""
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = BY_CODE.get(name, DatamgrError)
    err = cls(details or name)
    err.code = name
    return err


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None


async def acall(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await fn(*args, **kwargs)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None
