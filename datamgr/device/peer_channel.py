"""Mutual-TLS channels to paired devices' peer servers (`datamgr.device.peer_server`), and the probes
that tell a refused certificate from a dead peer.

A refused handshake reaches a gRPC client as UNAVAILABLE ("Socket closed"), like a dead peer (or as
DEADLINE_EXCEEDED with wait_for_ready). The channels of `open_peer_channel` tell these apart: when a
call fails so, they open one TLS connection themselves, and if the peer ends it right after the
handshake (a gRPC server that accepts a connection always sends its HTTP/2 settings first) or presents
another certificate than the pinned one, the error becomes UNAUTHENTICATED. So does the INTERNAL that
gRPC Python reports when a refused stream was still sending (its status is lost in that race). Unary and
server/bidi-streaming calls get this mapping; client-streaming calls do not (`peer_refusal` gives the
same verdict by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from datamgr.device.identity import PEER_HOSTNAME, Identity
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import InvalidArgument, Unauthenticated

MAX_MESSAGE = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.ssl_target_name_override", PEER_HOSTNAME),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # a connection attempt lasts 2 s, the next one follows within 1 s: a healed partition is noticed
    # in a second or two (by the defaults, 20 s attempts up to 120 s apart, it could take minutes)
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# A peer that vanishes without a word (out of range, a dropped link) is noticed by HTTP/2 pings while
# a call is open: one KEEPALIVE[0] ms after the connection last read anything, the connection dead
# when it goes unanswered for KEEPALIVE[1] ms, so 2-4 s after the peer's last bytes. Without them a
# stream would wait minutes for TCP to give up: a UDMF fetch's holder would keep the read's turn as
# long, an offloaded AI generation would stall before the origin replays it elsewhere. A ping is a
# few dozen bytes, sent only on a quiet connection; 2 s for its ack spans TCP's first retransmissions
# (200 ms, doubling), and a longer blip fails the call (sync retries, a generation moves on). The
# server pings its callers the same way, and lets a client ping that often.
KEEPALIVE = (2_000, 2_000)


def keepalive_options(keepalive: tuple[int, int], server: bool) -> list[tuple[str, int]]:
    every, timeout = keepalive
    options = [
        ("grpc.keepalive_time_ms", every),
        ("grpc.keepalive_timeout_ms", timeout),
        ("grpc.http2.ping_timeout_ms", timeout),  # grpc 1.85 waits this long (default 1 min) for an ack
        ("grpc.http2.max_pings_without_data", 0),  # a stream's receiver sends no data frames
    ]
    if server:
        # peers ping as often as we do (and gRPC clients at most once a second): by default pings under
        # 5 min apart while the server sends nothing earn strikes and, past 2, a GOAWAY too_many_pings
        options.append(("grpc.http2.min_ping_interval_without_data_ms", every // 2))
    return options


_PROBE_TIMEOUT_S = 3.0


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; InvalidArgument otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def fetch_certificate(address: str, timeout: float = _PROBE_TIMEOUT_S) -> bytes:
    """The certificate the TLS server at `address` presents, unverified (pairing's proof checks it)."""
    host, port = split_address(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=PEER_HOSTNAME), timeout
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        await _close(writer)
    return ssl.DER_cert_to_PEM_cert(der).encode()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def peer_refusal(address: str, identity: Identity, peer_cert_pem: bytes) -> str | None:
    """Why the peer at `address` refuses this device at the TLS layer; None if it accepts it, or
    cannot be reached (then the failure is UNAVAILABLE, not ours to explain)."""
    host, port = split_address(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=peer_cert_pem.decode())
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    ctx.set_alpn_protocols(["h2"])
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=PEER_HOSTNAME), _PROBE_TIMEOUT_S
        )
    except ssl.SSLCertVerificationError:
        return f"the device at {address} presented another certificate than the paired one"
    except ssl.SSLError as exc:
        return f"the device at {address} refused the TLS handshake ({exc.reason})"
    except (OSError, TimeoutError):
        return None
    try:
        data = await asyncio.wait_for(reader.read(1), _PROBE_TIMEOUT_S)
    except ssl.SSLError as exc:
        return f"the device at {address} refused this device's certificate ({exc.reason})"
    except (OSError, TimeoutError):
        return None
    finally:
        await _close(writer)
    if data:
        return None
    return (
        f"the device at {address} refused this device's certificate: it is not paired with this device, "
        "or unpaired it"
    )


# How a refused handshake fails a call: UNAVAILABLE, or DEADLINE_EXCEEDED with wait_for_ready.
_MAYBE_REFUSED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


# gRPC Python's client fails a stream with this INTERNAL when the server ends the call (refusing it,
# say) while a request message is still being sent: the server's own status is lost.
_SEND_RACE = 'Failed "execute_batch"'


def _maybe_refused(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() in _MAYBE_REFUSED:
        return True
    return exc.code() == grpc.StatusCode.INTERNAL and _SEND_RACE in (exc.debug_error_string() or "")


async def _mapped(
    exc: grpc.aio.AioRpcError, refusal: Callable[[], Awaitable[str | None]]
) -> grpc.aio.AioRpcError:
    if not _maybe_refused(exc):
        return exc
    reason = await refusal()
    if reason is None:
        return exc
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=reason,
        debug_error_string=exc.debug_error_string(),
    )


async def _mapped_stream(call: Any, refusal: Callable[[], Awaitable[str | None]]) -> AsyncIterator[Any]:
    """A stream that has sent a message was accepted: its failure is not a refused handshake, and no
    probe is made (one cost a drained AI stream a second before it could move)."""
    received = False
    try:
        async for item in call:
            received = True
            yield item
    except grpc.aio.AioRpcError as exc:
        if received:
            raise
        raise await _mapped(exc, refusal) from None


class _UnaryUnaryRefusal(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, refusal: Callable[[], Awaitable[str | None]]) -> None:
        self._refusal = refusal

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            raise await _mapped(exc, self._refusal) from None
        return call


class _UnaryStreamRefusal(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, refusal: Callable[[], Awaitable[str | None]]) -> None:
        self._refusal = refusal

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return _mapped_stream(await continuation(details, request), self._refusal)


class _StreamStreamRefusal(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, refusal: Callable[[], Awaitable[str | None]]) -> None:
        self._refusal = refusal

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return _mapped_stream(await continuation(details, request_iterator), self._refusal)


def open_peer_channel(
    address: str, identity: Identity, peer_cert_pem: bytes | str, keepalive: tuple[int, int] = KEEPALIVE
) -> grpc.aio.Channel:
    """A mutual-TLS channel to the peer server at `address`: we present our certificate, and accept
    only the peer's `peer_cert_pem` (pinned: it is the only root). A refusal of our certificate comes
    out as UNAUTHENTICATED (see the module docstring); a peer that stops answering mid-call, as
    UNAVAILABLE once a `keepalive` ping (every, timeout ms) went unanswered."""
    pem = peer_cert_pem.encode() if isinstance(peer_cert_pem, str) else peer_cert_pem
    split_address(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem, private_key=identity.key_pem, certificate_chain=identity.cert_pem
    )

    async def refusal() -> str | None:
        return await peer_refusal(address, identity, pem)

    interceptors = [_UnaryUnaryRefusal(refusal), _UnaryStreamRefusal(refusal), _StreamStreamRefusal(refusal)]
    options = [*CHANNEL_OPTIONS, *keepalive_options(keepalive, server=False)]
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def peer_channel(
    address: str, identity: Identity, peer_fingerprint: str, trust: TrustStore
) -> grpc.aio.Channel:
    """A mutual-TLS channel to the trusted device with certificate `peer_fingerprint`, pinned to the
    certificate stored at pairing; `address` "" means where it was last reached. Unauthenticated if
    the device is not trusted here."""
    device = trust.by_fingerprint(peer_fingerprint)
    if device is None:
        raise Unauthenticated(
            f"no paired device has certificate {peer_fingerprint[:16]}...: "
            "pair it first (datamgr devices pair)"
        )
    address = address or device.address
    if not address:
        raise InvalidArgument(f"no address is known for device {device.device_id}: pass one")
    return open_peer_channel(address, identity, device.cert_pem)


class PeerChannels:
    """One pinned channel per paired device, renewed when its address or certificate changes; a channel
    that found its device unreachable is dropped (it would wait out gRPC's reconnect backoff).
    `address(device_id)` is where the device is now ("" when nowhere known), as
    `datamgr.sync.transport.PeerLinks.address` says."""

    def __init__(self, identity: Identity, trust: TrustStore, address: Callable[[str], str]) -> None:
        self._identity, self._trust, self._address = identity, trust, address
        self._channels: dict[str, tuple[str, str, grpc.aio.Channel]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, device_id: str) -> tuple[TrustedDevice, grpc.aio.Channel, bool]:
        """The paired device, a channel to it and whether that channel was cached. NotFound when the
        device is not paired; LookupError when it has not been seen anywhere."""
        device = self._trust.get(device_id)
        address = self._address(device_id)
        if not address:
            raise LookupError(f"device {device.name} ({device_id}), which has not been seen online")
        cached = self._channels.get(device_id)
        if cached is not None and cached[:2] == (address, device.fingerprint):
            return device, cached[2], True
        if cached is not None:
            self._close_later(cached[2])
        channel = open_peer_channel(address, self._identity, device.cert_pem)
        self._channels[device_id] = (address, device.fingerprint, channel)
        return device, channel, False

    def drop(self, device_id: str, channel: grpc.aio.Channel) -> None:
        cached = self._channels.get(device_id)
        if cached is not None and cached[2] is channel:
            del self._channels[device_id]
            self._close_later(channel)

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.ensure_future(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        channels, self._channels = [c for _, _, c in self._channels.values()], {}
        await asyncio.gather(*(c.close() for c in channels), *self._closing, return_exceptions=True)
