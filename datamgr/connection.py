"""How every SDK reaches the daemon: address, token, call metadata, channel, and a failed call's error.

The three SDKs (`datamgr.client`, `udmf.client`, `aicap.client`) connect through this module alone.
It imports grpc and `datamgr.errors`, nothing of the daemon (the settings only when no address is
given, to find the socket where the daemon puts it), so no SDK loads SQLAlchemy.

- Address: the one given, else DATAMGR_ADDRESS, else the daemon's Unix socket (DATAMGR_DATA_DIR, ...).
  TCP is TLS pinned to a certificate fingerprint (`tls_fingerprint=` or DATAMGR_TLS_FINGERPRINT): no
  CA vouches for a device's self-signed certificate, so the client fetches what the listener presents,
  refuses it unless its SHA-256 (what `datamgr devices identity` shows) is the expected one, and trusts
  that certificate alone. Plaintext TCP only to a loopback address.
- Token: the one given, else DATAMGR_TOKEN; sent as `authorization: Bearer <token>`.
- Channel options: one message size limit (256 MiB each way) for every SDK.
- Errors: `ErrorClasses` turns a grpc.RpcError into the SDK's own class of its status (the rule in
  `datamgr.errors`); the connection's own errors are the calling SDK's classes too.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from datamgr._address import is_loopback
from datamgr.errors import BY_CODE, DatamgrError

E = TypeVar("E", bound=DatamgrError)
T = TypeVar("T")

ADDRESS_ENV = "DATAMGR_ADDRESS"
TOKEN_ENV = "DATAMGR_TOKEN"
FINGERPRINT_ENV = "DATAMGR_TLS_FINGERPRINT"
SERVER_NAME = "datamgr-peer"  # the DNS name in every device certificate (datamgr.device.identity)
MAX_MESSAGE = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
_FETCH_TIMEOUT_S = 5.0


class ErrorClasses(Generic[E]):
    """An SDK's error classes by status code name: what it raises for a failed call (`from_rpc`), or
    for a status of its own making (`error`). A code without a class gives `root` with that `code`."""

    __slots__ = ("by_code", "root")

    def __init__(self, root: type[E], by_code: Mapping[str, type[E]]) -> None:
        self.root = root
        self.by_code = by_code

    def error(self, code: str, message: str) -> E:
        error = self.by_code.get(code, self.root)(message)
        error.code = code
        return error

    def from_rpc(self, exc: grpc.RpcError) -> E:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else None
        return self.error(name, details or name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, a failed call raised as this SDK's error."""
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise self.from_rpc(exc) from None

    async def acall(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise self.from_rpc(exc) from None


DATAMGR = ErrorClasses(DatamgrError, BY_CODE)  # the DataShare, KV, admin and device SDK's
error_from_rpc = DATAMGR.from_rpc
call = DATAMGR.call
acall = DATAMGR.acall


# ---- address and token ----


def default_address() -> str:
    """DATAMGR_ADDRESS, else the daemon's Unix socket as its settings place it (DATAMGR_DATA_DIR, ...)."""
    address = os.environ.get(ADDRESS_ENV)
    if address:
        return address
    from datamgr.config import load_settings  # where the daemon puts its socket is the daemon's setting

    return f"unix:{load_settings().socket_path}"


def resolve_token(token: str | None, errors: ErrorClasses[Any] = DATAMGR) -> str:
    """`token`, else DATAMGR_TOKEN; Unauthenticated without either."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise errors.error("UNAUTHENTICATED", f"no app token: pass token=... or set {TOKEN_ENV}")
    return token


def admin_token(token: str | None = None, token_path: Path | None = None) -> str:
    """`token` if given, else the admin token read from `token_path` (by default the one in the
    daemon's data directory), which only the daemon's user can read."""
    if token is not None:
        return token
    if token_path is None:
        from datamgr.config import load_settings

        token_path = load_settings().admin_token_path
    try:
        return token_path.read_text().strip()
    except FileNotFoundError:
        raise DATAMGR.error(
            "NOT_FOUND",
            f"no admin token at {token_path}: has the daemon been started with this data directory?",
        ) from None
    except PermissionError:
        raise DATAMGR.error(
            "UNAUTHENTICATED", f"cannot read the admin token {token_path}: run as the daemon's user"
        ) from None


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries `token`."""
    return (("authorization", f"Bearer {token}"),)


# ---- channels ----


def open_channel(
    address: str | None, tls_fingerprint: str | None = None, errors: ErrorClasses[Any] = DATAMGR
) -> grpc.Channel:
    """A blocking channel to the daemon at `address` (default: `default_address()`): the Unix socket,
    or TCP, TLS pinned to `tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT)."""
    target = address or default_address()
    credentials, extra = channel_args(target, tls_fingerprint, errors)
    if credentials is None:
        return grpc.insecure_channel(target, options=[*CHANNEL_OPTIONS, *extra])
    return grpc.secure_channel(target, credentials, options=[*CHANNEL_OPTIONS, *extra])


def open_aio_channel(
    address: str | None, tls_fingerprint: str | None = None, errors: ErrorClasses[Any] = DATAMGR
) -> grpc.aio.Channel:
    """`open_channel` for asyncio. With a fingerprint it fetches the certificate first: a blocking
    TLS handshake of a few milliseconds, at most 5 s."""
    target = address or default_address()
    credentials, extra = channel_args(target, tls_fingerprint, errors)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, *extra])
    return grpc.aio.secure_channel(target, credentials, options=[*CHANNEL_OPTIONS, *extra])


def channel_args(
    address: str, tls_fingerprint: str | None, errors: ErrorClasses[Any] = DATAMGR
) -> tuple[grpc.ChannelCredentials | None, list[Any]]:
    """(credentials, extra options) for a channel to `address`: pinned TLS with a fingerprint (given or
    from the environment), else None for plaintext (Unix socket, or loopback TCP)."""
    fingerprint = resolve_fingerprint(tls_fingerprint, errors)
    if fingerprint is None:
        check_plaintext(address, errors)
        return None, []
    if address.startswith(("unix:", "unix-abstract:")):
        return None, []  # the Unix socket has no TLS: file permissions and tokens guard it
    credentials = pinned_credentials(address, fingerprint, errors)
    return credentials, [("grpc.ssl_target_name_override", SERVER_NAME)]


# ---- TLS pinned by fingerprint ----


def normalize_fingerprint(text: str, errors: ErrorClasses[Any] = DATAMGR) -> str:
    """64 lowercase hex digits from `sha256:HEX`, `HEX`, `5A3F 09C1 ...` or `5A:3F:...`."""
    digits = text.strip().removeprefix("sha256:").replace(" ", "").replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise errors.error(
            "INVALID_ARGUMENT",
            f"not a certificate fingerprint: {text!r} (expected sha256:<64 hex digits>, as "
            "`datamgr devices identity` shows it)",
        )
    return digits


def resolve_fingerprint(fingerprint: str | None, errors: ErrorClasses[Any] = DATAMGR) -> str | None:
    """`fingerprint`, else DATAMGR_TLS_FINGERPRINT, normalized; None if neither is set."""
    fingerprint = fingerprint or os.environ.get(FINGERPRINT_ENV) or None
    return normalize_fingerprint(fingerprint, errors) if fingerprint else None


def fetch_certificate(
    address: str, timeout: float = _FETCH_TIMEOUT_S, errors: ErrorClasses[Any] = DATAMGR
) -> bytes:
    """The DER certificate the TLS server at HOST:PORT presents, unverified (the caller pins it)."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=SERVER_NAME) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise errors.error(
            "UNAVAILABLE",
            f"{address} does not speak TLS ({exc.reason}): is it a datamgr TCP listener? "
            "(a daemon with tcp_plaintext takes no tls_fingerprint)",
        ) from None
    except (OSError, ValueError) as exc:
        raise errors.error("UNAVAILABLE", f"cannot reach {address}: {exc}") from None
    assert der is not None
    return der


def pinned_credentials(
    address: str, fingerprint: str, errors: ErrorClasses[Any] = DATAMGR
) -> grpc.ChannelCredentials:
    """Credentials that trust only the certificate `address` presents, once its fingerprint is the
    expected one; Unauthenticated (no connection made) if it is not."""
    der = fetch_certificate(address, errors=errors)
    presented = hashlib.sha256(der).hexdigest()
    if presented != fingerprint:
        raise errors.error(
            "UNAUTHENTICATED",
            f"the server at {address} presented certificate sha256:{presented}, not the expected "
            f"sha256:{fingerprint}: it is not the device you meant (or its identity was re-made)",
        )
    return grpc.ssl_channel_credentials(root_certificates=ssl.DER_cert_to_PEM_cert(der).encode())


def check_plaintext(address: str, errors: ErrorClasses[Any] = DATAMGR) -> None:
    """A TCP address without a fingerprint is dialed in plaintext, which only a loopback one may be."""
    if address.startswith(("unix:", "unix-abstract:")) or is_loopback(address):
        return
    raise errors.error(
        "INVALID_ARGUMENT",
        f"{address} is reached over TLS: pass tls_fingerprint='sha256:...' (or set {FINGERPRINT_ENV}) "
        "with the fingerprint its owner sees in `datamgr devices identity`",
    )
