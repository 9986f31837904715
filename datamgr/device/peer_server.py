"""The peer server: device-to-device gRPC over TCP (the channels to peers: `datamgr.device.peer_channel`).

Two ports, a grpc server each (grpc's message limits are per server):

- the peer port: TLS with the device certificate, client certificates REQUIRED and verified against
  the trusted devices' certificates (plus our own, so the set is never empty). grpc checks a client
  certificate only against root certificates and has no verify callback, so the roots are the trust
  list: `grpc.dynamic_ssl_server_credentials` re-reads them before each new connection once the list
  has changed, and an unpaired device's next connection fails its handshake at once.
- the pairing port: server-only TLS (a device that is not paired yet has no certificate the peer
  port would accept). Only `Pair` may be called there, and only while a pairing window is open:
  with none open it is refused before its request is read, and messages are small
  (`pairing_max_message_bytes`), as anyone may connect.

Connections outlive the roots they were accepted with, so every call is checked too: an interceptor
reads the client certificate from `context.auth_context()` and refuses (UNAUTHENTICATED) any method
but `Pair` from a certificate that is not trusted now, or from no certificate (the pairing port).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from datamgr._edge import Edge, status_of
from datamgr.device.identity import Identity, certificate_info, fingerprint_of
from datamgr.device.pairing import PairingDesk
from datamgr.device.peer_channel import KEEPALIVE, MAX_MESSAGE, join_address, keepalive_options
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import DatamgrError, DeadlineExceeded, InvalidArgument, Unauthenticated
from datamgr.gate import refusal
from datamgr.storage import Database
from datamgr.v1 import peer_pb2 as pb
from datamgr.v1 import peer_pb2_grpc as pb_grpc

log = logging.getLogger("datamgr.peer")

PROTOCOL_VERSION = 1
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PeerService"].full_name
OPEN_METHODS = frozenset({f"/{SERVICE_NAME}/Pair"})  # callable without a trusted certificate


_NAME_BYTES = 63


@dataclass(frozen=True, slots=True)
class PeerConfig:
    listen: str
    pairing_listen: str
    device_name: str
    security_level: int
    pairing_window_s: float = 120.0
    pairing_attempts: int = 3
    step_timeout_s: float = 30.0  # how long one pairing message or peer call may take
    keepalive: tuple[int, int] = KEEPALIVE  # the server's pings to its callers (every, timeout ms)
    max_message_bytes: int = MAX_MESSAGE  # what the peer port reads (paired devices: sync batches)
    pairing_max_message_bytes: int = 64 * 1024  # what the pairing port reads (pairing's are small)


def observed_host(peer: str) -> str:
    """The host of a grpc `context.peer()` string ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678")."""
    kind, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0].strip("[]")
    return host if kind in ("ipv4", "ipv6") and host else ""


def clean_name(name: str, fallback: str) -> str:
    """A peer's name as we store it: printable, at most 63 UTF-8 bytes, never empty."""
    name = "".join(c for c in name if c.isprintable()).strip()
    name = name.encode()[:_NAME_BYTES].decode(errors="ignore")
    return name or fallback


def clean_level(level: int) -> int:
    """A declared security level, SL1-SL5; anything else counts as the lowest, SL1."""
    return level if 1 <= level <= 5 else 1


@functools.lru_cache(maxsize=1024)
def _fingerprint_of_pem(pem: bytes) -> str:
    return fingerprint_of(x509.load_pem_x509_certificate(pem))


def client_fingerprint(context: Any) -> str | None:
    """The fingerprint of the certificate the caller presented, None without one (pairing port)."""
    pems = context.auth_context().get("x509_pem_cert")
    return _fingerprint_of_pem(pems[0]) if pems else None


def calling_device(context: Any, trust: TrustStore) -> TrustedDevice | None:
    """The trusted device making this call (for peer RPC handlers), None if the caller is not one."""
    fingerprint = client_fingerprint(context)
    return trust.by_fingerprint(fingerprint) if fingerprint else None


class _TrustCheck(grpc.aio.ServerInterceptor):
    """Refuses every method but the open ones to callers without a trusted certificate."""

    def __init__(self, trust: TrustStore) -> None:
        self._trust = trust

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in OPEN_METHODS:
            return handler
        return _guarded(handler, self._check)

    async def _check(self, context: Any) -> None:
        fingerprint = client_fingerprint(context)
        if fingerprint is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "peer calls need mutual TLS with a paired device's certificate: this is the pairing port",
            )
        elif not self._trust.is_trusted(fingerprint):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the calling device (certificate {fingerprint[:16]}...) is not paired with this device, "
                "or was unpaired: pair them first (datamgr devices pair)",
            )


class _WindowCheck(grpc.aio.ServerInterceptor):
    """On the pairing port: while no pairing window is open, `Pair` is refused after reading no more than
    its first message (bounded by the port's small receive limit), and waiting no longer than
    `read_first_s` for it."""

    def __init__(self, desk: PairingDesk, read_first_s: float = 2.0) -> None:
        self._desk = desk
        self._read_first_s = read_first_s

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method not in OPEN_METHODS:
            return handler
        try:
            self._desk.current()
        except DatamgrError as exc:
            # the first message is read (at most `pairing_max_message_bytes`): see `refusal`
            code = status_of(exc) or grpc.StatusCode.FAILED_PRECONDITION
            return refusal(code, exc.message, read_first_s=self._read_first_s)
        return handler


def _guarded(handler: Any, check: Callable[[Any], Awaitable[None]]) -> Any:
    """`handler` with `check(context)` run before its behaviour, whatever kind of method it is."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, make in kinds:
        inner = getattr(handler, attr)
        if inner is None:
            continue
        if inspect.isasyncgenfunction(inner):

            async def stream(request: Any, context: Any, inner: Any = inner) -> AsyncIterator[Any]:
                await check(context)
                async for item in inner(request, context):
                    yield item

            behaviour: Any = stream
        else:

            async def unary(request: Any, context: Any, inner: Any = inner) -> Any:
                await check(context)
                return await inner(request, context)

            behaviour = unary
        return make(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise AssertionError("an RPC method handler of no known kind")


class PeerServer:
    """The peer and pairing ports of this device; `server` takes more peer services before `start`."""

    def __init__(
        self,
        config: PeerConfig,
        identity: Identity,
        trust: TrustStore,
        db: Database,
        desk: PairingDesk | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.trust = trust
        self.db = db
        self.desk = desk or PairingDesk(config.pairing_window_s, config.pairing_attempts)
        self.port = 0
        self.pairing_port = 0
        self.server = grpc.aio.server(
            interceptors=[_TrustCheck(trust), Edge()],  # trust first, then the edge (errors, decoding)
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                *keepalive_options(config.keepalive, server=True),
            ],
        )
        # The pairing port is open to any device, so it has a server of its own with small limits.
        self.pairing_server = grpc.aio.server(
            interceptors=[_WindowCheck(self.desk), _TrustCheck(trust), Edge()],
            options=[
                ("grpc.max_receive_message_length", config.pairing_max_message_bytes),
                ("grpc.max_send_message_length", config.pairing_max_message_bytes),
                *keepalive_options(config.keepalive, server=True),
            ],
        )
        pb_grpc.add_PeerServiceServicer_to_server(PeerServicer(self), self.server)
        pb_grpc.add_PeerServiceServicer_to_server(PeerServicer(self), self.pairing_server)
        self._roots_version = -1

    def info(self) -> pb.PeerDeviceInfo:
        return pb.PeerDeviceInfo(
            device_id=self.identity.device_id,
            name=self.config.device_name,
            security_level=self.config.security_level,  # type: ignore[arg-type]
            peer_port=self.port,
            protocol_version=PROTOCOL_VERSION,
        )

    @property
    def pairing_address(self) -> str:
        host = self.config.pairing_listen.rpartition(":")[0]
        if host in ("", "0.0.0.0", "[::]"):
            import socket

            host = socket.gethostname()
        return f"{host}:{self.pairing_port}"

    def _certificate_config(self) -> Any:
        version = self.trust.version  # read first: a change while we build shows on the next fetch
        roots = self.identity.cert_pem + self.trust.roots_pem()
        self._roots_version = version
        return grpc.ssl_server_certificate_configuration(
            [(self.identity.key_pem, self.identity.cert_pem)], root_certificates=roots
        )

    def _fetch_certificate_config(self) -> Any:
        """Called by grpc before every new peer-port handshake (on its own thread): new roots or None."""
        if self.trust.version == self._roots_version:
            return None
        log.info("trusted devices changed: the peer port now accepts %d device(s)", len(self.trust.all()))
        return self._certificate_config()

    async def start(self) -> None:
        mutual = grpc.dynamic_ssl_server_credentials(
            self._certificate_config(), self._fetch_certificate_config, require_client_authentication=True
        )
        self.port = self.server.add_secure_port(self.config.listen, mutual)
        server_only = grpc.ssl_server_credentials([(self.identity.key_pem, self.identity.cert_pem)])
        self.pairing_port = self.pairing_server.add_secure_port(self.config.pairing_listen, server_only)
        await self.server.start()
        await self.pairing_server.start()
        log.info(
            "peer server: mutual TLS on %s:%d, pairing on %s; device %s, certificate %s",
            self.config.listen.rpartition(":")[0],
            self.port,
            self.pairing_address,
            self.identity.device_id,
            self.identity.display_fingerprint,
        )

    async def stop(self, grace: float) -> None:
        self.desk.close()
        await asyncio.gather(self.server.stop(grace), self.pairing_server.stop(grace))


async def _read(context: Any, step: str, timeout: float) -> Any:
    try:
        message = await asyncio.wait_for(context.read(), timeout)
    except TimeoutError:
        raise DeadlineExceeded(f"no pairing {step} within {timeout:.0f} s") from None
    if message is grpc.aio.EOF or message.WhichOneof("step") != step:
        raise InvalidArgument(f"pairing: expected the {step} message")
    return getattr(message, step)


class PeerServicer(pb_grpc.PeerServiceServicer):
    """PeerService: pairing (the responder's side), Hello and Unpair. Sync RPCs: subclass or add."""

    def __init__(self, peer: PeerServer) -> None:
        self._peer = peer

    async def Pair(self, request_iterator: Any, context: Any) -> None:
        peer = self._peer
        timeout = peer.config.step_timeout_s
        start = await _read(context, "start", timeout)
        window = peer.desk.current()
        device_id, fingerprint, cert_pem = certificate_info(start.certificate_pem)
        if fingerprint == peer.identity.fingerprint:
            raise InvalidArgument("a device cannot pair with itself")
        attempt = window.begin(start.srp_public)
        log.info("pairing attempt from %s (device %s)", context.peer(), device_id)
        await context.write(
            pb.PairResponse(challenge=pb.PairChallenge(salt=window.salt, srp_public=attempt.b_public))
        )
        proof = await _read(context, "proof", timeout)
        try:
            our_proof = window.finish(attempt, fingerprint, peer.identity.fingerprint, proof.proof)
        except Unauthenticated:
            log.warning("pairing attempt from %s: wrong code (%d left)", context.peer(), window.attempts_left)
            raise
        host = observed_host(context.peer())
        device = TrustedDevice(
            device_id=device_id,
            name=clean_name(start.device.name, device_id[:8]),
            fingerprint=fingerprint,
            cert_pem=cert_pem,
            security_level=window.level,  # what its owner confirmed, not what it asserts
            address=join_address(host, start.device.peer_port) if host and start.device.peer_port else "",
            asserted_level=clean_level(start.device.security_level),
        )
        trusted: TrustedDevice | None = None
        try:
            trusted = await peer.db.write(peer.trust.add, device)
        finally:
            window.complete(trusted)
        device = trusted
        log.info("paired with %s (%s), certificate %s", device.name, device.device_id, fingerprint)
        await context.write(pb.PairResponse(done=pb.PairDone(proof=our_proof, device=peer.info())))

    async def Hello(self, request: pb.HelloRequest, context: Any) -> pb.HelloResponse:
        caller = calling_device(context, self._peer.trust)
        assert caller is not None  # the interceptor let only trusted devices through
        log.debug("hello from %s (%s)", caller.name, caller.device_id)
        return pb.HelloResponse(device=self._peer.info(), time=time.time())

    async def Unpair(self, request: pb.UnpairRequest, context: Any) -> pb.UnpairResponse:
        caller = calling_device(context, self._peer.trust)
        assert caller is not None
        await self._peer.db.write(self._peer.trust.remove, caller.device_id)
        log.info("%s (%s) unpaired itself: no longer trusted", caller.name, caller.device_id)
        return pb.UnpairResponse()
