"""Channels to the daemon's TCP listener, which serves TLS with the device's self-signed certificate.

No CA vouches for that certificate, so clients pin it by fingerprint (SHA-256 of its DER, what
`datamgr devices identity` shows): `secure_channel_options` fetches the certificate the listener
presents, refuses it unless its fingerprint is the expected one, and returns credentials that trust
that certificate alone. grpc then checks the pin on every connection it makes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from typing import Any

import grpc

from datamgr._address import is_loopback
from datamgr.errors import InvalidArgument, Unauthenticated, Unavailable

FINGERPRINT_ENV = "DATAMGR_TLS_FINGERPRINT"
SERVER_NAME = "datamgr-peer"  # the DNS name in every device certificate (datamgr.device.identity)
_FETCH_TIMEOUT_S = 5.0


def normalize_fingerprint(text: str) -> str:
    """64 lowercase hex digits from `sha256:HEX`, `HEX`, `5A3F 09C1 ...` or `5A:3F:...`."""
    digits = text.strip().removeprefix("sha256:").replace(" ", "").replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidArgument(
            f"not a certificate fingerprint: {text!r} (expected sha256:<64 hex digits>, as "
            "`datamgr devices identity` shows it)"
        )
    return digits


def resolve_fingerprint(fingerprint: str | None) -> str | None:
    """`fingerprint`, else `DATAMGR_TLS_FINGERPRINT`, normalized; None if neither is set."""
    fingerprint = fingerprint or os.environ.get(FINGERPRINT_ENV) or None
    return normalize_fingerprint(fingerprint) if fingerprint else None


def fetch_certificate(address: str, timeout: float = _FETCH_TIMEOUT_S) -> bytes:
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
        raise Unavailable(
            f"{address} does not speak TLS ({exc.reason}): is it a datamgr TCP listener? "
            "(a daemon with tcp_plaintext takes no tls_fingerprint)"
        ) from None
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot reach {address}: {exc}") from None
    assert der is not None
    return der


def pinned_credentials(address: str, fingerprint: str) -> grpc.ChannelCredentials:
    """Credentials that trust only the certificate `address` presents, once its fingerprint is the
    expected one; Unauthenticated (no connection made) if it is not."""
    der = fetch_certificate(address)
    presented = hashlib.sha256(der).hexdigest()
    if presented != fingerprint:
        raise Unauthenticated(
            f"the server at {address} presented certificate sha256:{presented}, not the expected "
            f"sha256:{fingerprint}: it is not the device you meant (or its identity was re-made)"
        )
    return grpc.ssl_channel_credentials(root_certificates=ssl.DER_cert_to_PEM_cert(der).encode())


def check_plaintext(address: str) -> None:
    """A TCP address without a fingerprint is dialed in plaintext, which only a loopback one may be."""
    if address.startswith(("unix:", "unix-abstract:")) or is_loopback(address):
        return
    raise InvalidArgument(
        f"{address} is reached over TLS: pass tls_fingerprint='sha256:...' (or set {FINGERPRINT_ENV}) "
        "with the fingerprint its owner sees in `datamgr devices identity`"
    )


def channel_args(
    address: str, tls_fingerprint: str | None
) -> tuple[grpc.ChannelCredentials | None, list[Any]]:
    """(credentials, extra options) for a channel to `address`: pinned TLS with a fingerprint (given or
    from the environment), else None for plaintext (Unix socket, or loopback TCP)."""
    fingerprint = resolve_fingerprint(tls_fingerprint)
    if fingerprint is None:
        check_plaintext(address)
        return None, []
    if address.startswith(("unix:", "unix-abstract:")):
        return None, []  # the Unix socket has no TLS: file permissions and tokens guard it
    return pinned_credentials(address, fingerprint), [("grpc.ssl_target_name_override", SERVER_NAME)]
