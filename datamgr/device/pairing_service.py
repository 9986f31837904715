"""PairingService: the device owner's trust operations on the local socket (admin token).

Opening a pairing window (this device is B, showing the code), pairing with another device (this
device is A: it dials B's pairing port and runs the initiator's side of `pairing`), listing trusted
devices, unpairing (local trust goes at once, then the peer is told if it can be reached) and a Hello
over mutual TLS to check a trusted device end to end. Either way of pairing takes the security level
the owner confirms for the other device (default SL1, `trust.DEFAULT_LEVEL`); what the device
asserts is kept beside it, only to show. The owner changes the level later (SetDeviceLevel) and lists
the audit log of cross-device reads (ListPeerReads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from datamgr.caller import Identify
from datamgr.connection import error_from_rpc
from datamgr.device.identity import certificate_info
from datamgr.device.pairing import Initiator, PairingWindow, WindowState, check_code
from datamgr.device.peer_channel import (
    CHANNEL_OPTIONS,
    fetch_certificate,
    join_address,
    open_peer_channel,
    split_address,
)
from datamgr.device.peer_reads import Direction, PeerRead, PeerReadLog
from datamgr.device.peer_server import PeerServer, clean_level, clean_name
from datamgr.device.trust import DEFAULT_LEVEL, TrustedDevice
from datamgr.errors import (
    DatamgrError,
    FailedPrecondition,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
)
from datamgr.security_levels import check_device_level
from datamgr.v1 import pairing_pb2 as pb
from datamgr.v1 import pairing_pb2_grpc as pb_grpc
from datamgr.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger("datamgr.pairing")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PairingService"].full_name
_DIRECTIONS = {
    Direction.SERVED: pb.PEER_READ_DIRECTION_SERVED,
    Direction.FETCHED: pb.PEER_READ_DIRECTION_FETCHED,
}
_CLOSE_REASONS = {
    WindowState.EXPIRED: pb.PAIRING_WINDOW_CLOSE_REASON_EXPIRED,
    WindowState.EXHAUSTED: pb.PAIRING_WINDOW_CLOSE_REASON_EXHAUSTED,
    WindowState.CANCELLED: pb.PAIRING_WINDOW_CLOSE_REASON_CANCELLED,
    WindowState.PAIRED: pb.PAIRING_WINDOW_CLOSE_REASON_CANCELLED,  # proved the code, trusting it failed
}


def trusted_message(device: TrustedDevice) -> pb.TrustedDevice:
    return pb.TrustedDevice(
        device_id=device.device_id,
        name=device.name,
        fingerprint=device.fingerprint,
        security_level=device.security_level,  # type: ignore[arg-type]
        address=device.address,
        paired_at=device.paired_at,
        asserted_level=device.asserted_level,  # type: ignore[arg-type]
    )


def read_message(read: PeerRead) -> pb.PeerRead:
    return pb.PeerRead(
        time=read.at,
        direction=_DIRECTIONS[read.direction],
        device_id=read.device_id,
        bundle=read.bundle,
        key=read.key,
        bytes=read.bytes,
        outcome=read.outcome,
    )


def confirmed_level(requested: int) -> int:
    """The level an owner's request confirms: SL1-SL5, or `DEFAULT_LEVEL` when it names none."""
    return check_device_level(requested) if requested else DEFAULT_LEVEL


def _peer_error(exc: grpc.aio.AioRpcError, address: str) -> DatamgrError:
    """A peer's refusal as our error, same code, the message saying which device it came from."""
    err = error_from_rpc(exc)
    if address in err.message:
        return err
    prefixed = type(err)(f"the device at {address}: {err.message}")
    prefixed.code = err.code
    return prefixed


async def pair_with(peer: PeerServer, address: str, code: str, level: int = DEFAULT_LEVEL) -> TrustedDevice:
    """Pairs with the device whose pairing port is at `address` and which shows `code`; both trust
    each other afterwards, this one at the `level` its owner confirms. The initiator's side of
    `datamgr.device.pairing`."""
    host, _ = split_address(address)
    check_code(code)
    timeout = peer.config.step_timeout_s
    try:
        cert_pem = await fetch_certificate(address)
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"cannot reach {address}: {exc or 'timed out'}") from None
    device_id, fingerprint, canonical_pem = certificate_info(cert_pem)
    if fingerprint == peer.identity.fingerprint:
        raise InvalidArgument(f"{address} is this device's own pairing address")
    initiator = Initiator(code, peer.identity.fingerprint, fingerprint)
    # server-only TLS pinned to the certificate just fetched: the proof binds it, so a substitute fails
    channel = grpc.aio.secure_channel(
        address,
        grpc.ssl_channel_credentials(root_certificates=canonical_pem.encode()),
        options=CHANNEL_OPTIONS,
    )
    async with channel:
        call = peer_pb2_grpc.PeerServiceStub(channel).Pair(timeout=3 * timeout)
        try:
            start = peer_pb2.PairStart(
                certificate_pem=peer.identity.cert_pem, device=peer.info(), srp_public=initiator.public
            )
            await call.write(peer_pb2.PairRequest(start=start))
            challenge = await _step(call, "challenge")
            proof = initiator.prove(challenge.salt, challenge.srp_public)
            await call.write(peer_pb2.PairRequest(proof=peer_pb2.PairProof(proof=proof)))
            done = await _step(call, "done")
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, address) from None
    initiator.verify(done.proof)
    trusted = TrustedDevice(
        device_id=device_id,
        name=clean_name(done.device.name, device_id[:8]),
        fingerprint=fingerprint,
        cert_pem=canonical_pem,
        security_level=level,
        address=join_address(host, done.device.peer_port) if done.device.peer_port else "",
        asserted_level=clean_level(done.device.security_level),
    )
    trusted = await peer.db.write(peer.trust.add, trusted)
    log.info("paired with %s (%s) at %s, certificate %s", trusted.name, device_id, address, fingerprint)
    return trusted


async def _step(call: Any, step: str) -> Any:
    message = await call.read()
    if message is grpc.aio.EOF or message.WhichOneof("step") != step:
        raise InvalidArgument(f"the device broke the pairing protocol (expected {step})")
    return getattr(message, step)


async def hello(
    peer: PeerServer, device: TrustedDevice, address: str = ""
) -> tuple[peer_pb2.PeerDeviceInfo, float]:
    """Hello to a trusted device over mutual TLS: its answer and the round trip in ms."""
    address = address or device.address
    if not address:
        raise FailedPrecondition(f"no address is known for device {device.device_id}: pass one")
    async with open_peer_channel(address, peer.identity, device.cert_pem) as channel:
        started = time.perf_counter()
        try:
            resp = await peer_pb2_grpc.PeerServiceStub(channel).Hello(
                peer_pb2.HelloRequest(device=peer.info()), timeout=peer.config.step_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, address) from None
        rtt_ms = (time.perf_counter() - started) * 1000
    if resp.device.device_id != device.device_id:  # cannot be, the certificate is pinned; say so if it is
        raise Unauthenticated(
            f"the device at {address} says it is {resp.device.device_id}, not {device.device_id}"
        )
    return resp.device, rtt_ms


async def unpair(peer: PeerServer, device_id: str) -> tuple[TrustedDevice, bool, str]:
    """Stops trusting `device_id` at once, then tells it: (device, notified, why not)."""
    device = await peer.db.write(peer.trust.remove, device_id)
    log.info("unpaired %s (%s)", device.name, device.device_id)
    if not device.address:
        return device, False, "no address is known for it"
    try:
        async with open_peer_channel(device.address, peer.identity, device.cert_pem) as channel:
            await peer_pb2_grpc.PeerServiceStub(channel).Unpair(peer_pb2.UnpairRequest(), timeout=3.0)
    except grpc.aio.AioRpcError as exc:
        return device, False, f"{device.address}: {exc.code().name}: {exc.details()}"
    return device, True, ""


class PairingService(pb_grpc.PairingServiceServicer):
    def __init__(self, peer: PeerServer, identify: Identify, audit: PeerReadLog) -> None:
        self._peer = peer
        self._identify = identify
        self._audit = audit

    def add_to(self, server: Any) -> None:
        pb_grpc.add_PairingServiceServicer_to_server(self, server)

    async def OpenPairingWindow(
        self, request: pb.OpenPairingWindowRequest, context: Any
    ) -> AsyncIterator[pb.OpenPairingWindowResponse]:
        self._identify.owner(context)
        level = confirmed_level(request.security_level)
        closed = asyncio.Event()
        window = self._peer.desk.open(on_close=lambda _w: closed.set(), level=level)
        log.info("pairing window open for %.0f s", window.duration_s)
        try:
            yield pb.OpenPairingWindowResponse(
                opened=pb.PairingWindowOpened(
                    code=window.code,
                    expires_in_s=window.remaining_s(),
                    attempts=window.attempts,
                    pairing_address=self._peer.pairing_address,
                    device_id=self._peer.identity.device_id,
                    fingerprint=self._peer.identity.fingerprint,
                )
            )
            yield await _outcome(window, closed)
        finally:
            window.cancel()  # the owner left (or the daemon stops): nobody may pair through it now

    async def PairDevice(self, request: pb.PairDeviceRequest, context: Any) -> pb.PairDeviceResponse:
        self._identify.owner(context)
        level = confirmed_level(request.security_level)
        device = await pair_with(self._peer, request.address, request.code, level)
        return pb.PairDeviceResponse(device=trusted_message(device))

    async def ListTrustedDevices(
        self, request: pb.ListTrustedDevicesRequest, context: Any
    ) -> pb.ListTrustedDevicesResponse:
        self._identify.owner(context)
        return pb.ListTrustedDevicesResponse(devices=[trusted_message(d) for d in self._peer.trust.all()])

    async def UnpairDevice(self, request: pb.UnpairDeviceRequest, context: Any) -> pb.UnpairDeviceResponse:
        self._identify.owner(context)
        device, notified, detail = await unpair(self._peer, request.device_id)
        return pb.UnpairDeviceResponse(device=trusted_message(device), notified=notified, detail=detail)

    async def PingDevice(self, request: pb.PingDeviceRequest, context: Any) -> pb.PingDeviceResponse:
        self._identify.owner(context)
        device = self._peer.trust.get(request.device_id)
        info, rtt_ms = await hello(self._peer, device, request.address)
        return pb.PingDeviceResponse(device=info, round_trip_ms=rtt_ms)

    async def SetDeviceLevel(
        self, request: pb.SetDeviceLevelRequest, context: Any
    ) -> pb.SetDeviceLevelResponse:
        self._identify.owner(context)
        level = check_device_level(request.security_level)
        device = await self._peer.db.write(self._peer.trust.set_level, request.device_id, level)
        log.info("the owner confirmed SL%d for %s (%s)", level, device.name, device.device_id)
        return pb.SetDeviceLevelResponse(device=trusted_message(device))

    async def ListPeerReads(self, request: pb.ListPeerReadsRequest, context: Any) -> pb.ListPeerReadsResponse:
        self._identify.owner(context)
        limit = min(request.limit or 100, 10_000)
        reads = await self._peer.db.read(self._audit.recent, request.device_id, limit)
        return pb.ListPeerReadsResponse(reads=[read_message(r) for r in reads])

    async def GetDeviceIdentity(
        self, request: pb.GetDeviceIdentityRequest, context: Any
    ) -> pb.GetDeviceIdentityResponse:
        self._identify.owner(context)
        peer = self._peer
        return pb.GetDeviceIdentityResponse(
            device_id=peer.identity.device_id,
            fingerprint=peer.identity.fingerprint,
            name=peer.config.device_name,
            security_level=peer.config.security_level,  # type: ignore[arg-type]
            peer_port=peer.port,
            pairing_port=peer.pairing_port,
            certificate_pem=peer.identity.cert_pem,
        )


async def _outcome(window: PairingWindow, closed: asyncio.Event) -> pb.OpenPairingWindowResponse:
    """The window's last event: once a device paired through it, or it closed otherwise."""
    while True:
        state = window.state  # notices expiry
        if state is WindowState.OPEN:
            timeout: float | None = window.remaining_s() + 0.01
        elif state is WindowState.PAIRED and not closed.is_set():
            timeout = None  # a device proved the code; its trust is being written
        else:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), timeout)
    if state is WindowState.PAIRED and isinstance(window.paired_with, TrustedDevice):
        return pb.OpenPairingWindowResponse(paired=trusted_message(window.paired_with))
    log.info("pairing window closed: %s", state.value)
    return pb.OpenPairingWindowResponse(closed=pb.PairingWindowClosed(reason=_CLOSE_REASONS[state]))
