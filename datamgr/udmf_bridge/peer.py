"""UDMF reads between paired devices over the mutual-TLS peer port: `UdmfPeerServicer` (the device
holding the data) and `PeerFetcher` (the device whose app reads it).

The servicer answers `datamgr.sync.v1.UdmfPeerService.FetchData` with `UdmfService.serve_peer` for the
calling device, which the peer server's interceptor has already checked is paired. What leaves and
what a fetch consumes is decided here from this device's records (`udmf.access.may_serve_peer`): the
reader the peer names is logged, never believed. The fetcher keeps one pinned channel per paired
device (renewed when its address or certificate changes) and relays the holder's ReadResponses as
bytes, unparsed; a failed call becomes a udmf error that names the device. Cancelling a fetch cancels
the call, so the holder consumes nothing. Both sides log every read in the audit log (`peer_reads`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import grpc

from datamgr.device.identity import Identity
from datamgr.device.peer_channel import PeerChannels
from datamgr.device.peer_reads import Direction, PeerRead, PeerReadLog
from datamgr.device.peer_server import calling_device
from datamgr.device.trust import TrustStore
from datamgr.errors import NotFound as DeviceNotFound
from datamgr.sync.v1 import udmf_peer_pb2 as pb
from udmf.errors import BY_CODE, NotFound, UdmfError, Unavailable
from udmf.replica import serialize_read
from udmf.service import UdmfService
from udmf.v1 import udmf_pb2

log = logging.getLogger("datamgr.sync.udmf")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["UdmfPeerService"].full_name
FETCH = f"/{SERVICE_NAME}/FetchData"
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class UdmfPeerServicer:
    """UdmfPeerService: this device's CROSS_DEVICE data for paired devices' readers."""

    def __init__(self, udmf: UdmfService, trust: TrustStore, device_id: str, audit: PeerReadLog) -> None:
        self._udmf, self._trust, self._device_id, self._audit = udmf, trust, device_id, audit

    def add_to(self, server: grpc.aio.Server) -> None:
        """Registers FetchData; its chunks go out pre-encoded, as UdmfService's reads do."""
        handler = grpc.unary_stream_rpc_method_handler(
            self.FetchData,
            request_deserializer=pb.FetchDataRequest.FromString,
            response_serializer=bytes,  # FetchData serializes each message itself, to count its bytes
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"FetchData": handler}),)
        )

    async def FetchData(self, request: pb.FetchDataRequest, context: Any) -> AsyncIterator[Any]:
        caller = calling_device(context, self._trust)
        if caller is None:  # the interceptor refuses these first; unpaired between the two checks
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "the calling device is not paired with this one"
            )
        assert caller is not None
        sent, outcome = 0, "CANCELLED"
        try:
            async for msg in self._udmf.serve_peer(request.key, request.reader):
                if isinstance(msg, udmf_pb2.ReadResponse) and msg.part.WhichOneof("part") == "header":
                    msg.part.header.device = self._device_id
                raw = serialize_read(msg)
                sent += len(raw)
                yield raw
            outcome = "OK"
        except UdmfError as exc:  # its status is the edge's (datamgr._edge), as is a bug's
            outcome = exc.code
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            outcome = "INTERNAL"
            raise
        finally:
            read = PeerRead(Direction.SERVED, caller.device_id, request.reader, request.key, sent, outcome)
            self._audit.note(read)
        log.debug("udmf: %s (%s) read %s for %s", caller.name, caller.device_id, request.key, request.reader)


class PeerFetcher:
    """Reads a paired device's data through its UdmfPeerService. `address(device_id)` is where the
    device is now ("" when nowhere known), as `datamgr.sync.transport.PeerLinks.address`."""

    def __init__(
        self, identity: Identity, trust: TrustStore, address: Callable[[str], str], audit: PeerReadLog
    ) -> None:
        self._channels = PeerChannels(identity, trust, address)
        self._audit = audit

    async def fetch(self, origin: str, key: str, reader: str) -> AsyncIterator[bytes]:
        """The holder's ReadResponses for `key`, serialized (see `udmf.replica.Replication.fetch`),
        logged in the audit log."""
        received, outcome = 0, "CANCELLED"
        call = self._fetch(origin, key, reader)
        try:
            async for raw in call:
                received += len(raw)
                yield raw
            outcome = "OK"
        except UdmfError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "INTERNAL"
            raise
        finally:
            await call.aclose()  # a reader that went away: the call ends now, the holder consumes nothing
            self._audit.note(PeerRead(Direction.FETCHED, origin, reader, key, received, outcome))

    async def _fetch(self, origin: str, key: str, reader: str) -> AsyncGenerator[bytes, None]:
        """A cached channel that finds the holder unreachable is dropped (it would wait out gRPC's
        reconnect backoff), and the call is tried once more on a fresh one."""
        request = pb.FetchDataRequest(key=key, reader=reader)
        for retry in (True, False):
            name, channel, cached = self._channel(origin, key)
            call = channel.unary_stream(FETCH, request_serializer=pb.FetchDataRequest.SerializeToString)(
                request
            )
            sent = False
            try:
                async for raw in call:
                    sent = True
                    yield raw
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _UNREACHABLE:
                    raise _error(exc, f"device {name} ({origin})", key) from None
                self._drop(origin, channel)
                if not (retry and cached and not sent):
                    raise _error(exc, f"device {name} ({origin})", key) from None
            finally:
                call.cancel()  # a reader that went away: the holder stops, and consumes nothing

    def _channel(self, origin: str, key: str) -> tuple[str, grpc.aio.Channel, bool]:
        """The device's name, a channel to it and whether that channel was cached."""
        try:
            device, channel, cached = self._channels.get(origin)
        except DeviceNotFound:
            raise Unavailable(
                f"{key} is held by device {origin}, which is not paired with this device (any more)"
            ) from None
        except LookupError as exc:
            raise Unavailable(f"{key} is held by {exc}: nothing was read or consumed") from None
        return device.name, channel, cached

    def _drop(self, origin: str, channel: grpc.aio.Channel) -> None:
        self._channels.drop(origin, channel)

    async def close(self) -> None:
        await self._channels.close()


def _error(exc: grpc.aio.AioRpcError, device: str, key: str) -> UdmfError:
    """A failed fetch as the reader's error: the device named, UNAVAILABLE when it cannot be reached
    or no longer accepts this device (the reader's own call was fine)."""
    code, details = exc.code(), exc.details() or exc.code().name
    if code in _UNREACHABLE:
        return Unavailable(
            f"{device}, which holds {key}, cannot be reached ({details}): nothing was read or consumed; "
            "try again when it is online"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unavailable(f"{device}, which holds {key}, refused this device: {details}")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{device}: {details}")
    cls = BY_CODE.get(code.name)
    if cls is None:
        return Unavailable(f"{device} could not send {key}: {code.name}: {details}")
    return cls(f"{device}: {details}")
