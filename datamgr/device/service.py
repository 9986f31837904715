"""The DeviceService servicer: this device and the peer table of discovery, over gRPC.

Callers are the device owner (admin token) or apps holding ohos.permission.DISTRIBUTED_DATASYNC, the
permission OpenHarmony asks of apps that list devices to sync with.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from datamgr._grpc import bearer_token, rpc
from datamgr.apps import DISTRIBUTED_DATASYNC
from datamgr.device.advert import Advert
from datamgr.device.discovery import Discovery
from datamgr.device.peer_table import DeviceWatch, EventKind, Peer
from datamgr.errors import (
    DatamgrError,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from datamgr.v1 import devices_pb2 as pb
from datamgr.v1 import devices_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DeviceService"].full_name

_EVENT_TYPES = {
    EventKind.ONLINE: pb.DEVICE_EVENT_TYPE_ONLINE,
    EventKind.OFFLINE: pb.DEVICE_EVENT_TYPE_OFFLINE,
    EventKind.UPDATED: pb.DEVICE_EVENT_TYPE_UPDATED,
}


def _device_message(
    a: Advert, addresses: Iterable[str], port: int, online: bool, last_seen: float = 0.0
) -> pb.Device:
    return pb.Device(
        device_id=a.device_id,
        name=a.name,
        security_level=a.security_level,  # type: ignore[arg-type]
        fingerprint=a.fingerprint,
        capabilities=a.capabilities,
        addresses=addresses,
        port=port,
        protocol_version=a.protocol_version,
        online=online,
        last_seen=last_seen,
    )


class DeviceService(pb_grpc.DeviceServiceServicer):
    def __init__(
        self,
        discovery: Discovery,
        authenticate: Callable[[str], tuple[str, frozenset[str]] | None],
        is_admin: Callable[[str], bool],
    ) -> None:
        self._discovery = discovery
        self._authenticate = authenticate
        self._is_admin = is_admin
        self._watchers: dict[DeviceWatch, tuple[str, str]] = {}  # open app watches: bundle, token
        self._ended: dict[DeviceWatch, DatamgrError] = {}  # watches ended by a revoke, and why

    def add_to(self, server: Any) -> None:
        pb_grpc.add_DeviceServiceServicer_to_server(self, server)

    def _check(self, context: Any) -> tuple[str, str] | None:
        """The caller's (bundle, token) if it is an app allowed to list devices; None for the owner."""
        token = bearer_token(context)
        if not token:
            raise Unauthenticated("no token: pass the admin token or an app token (authorization: Bearer)")
        if self._is_admin(token):
            return None
        return self._check_app(token), token

    def _check_app(self, token: str) -> str:
        app = self._authenticate(token)
        if app is None:
            raise Unauthenticated("unknown token: the app was removed, or ask the device owner for one")
        bundle, permissions = app
        if DISTRIBUTED_DATASYNC not in permissions:
            raise PermissionDenied(f"{bundle} lacks {DISTRIBUTED_DATASYNC}, which listing devices needs")
        return bundle

    def revoked(self, bundle: str) -> None:
        """The owner revoked a permission of `bundle` or removed it (on the loop): its watches that
        may no longer list devices end now."""
        for watch, (owner, token) in list(self._watchers.items()):
            if owner != bundle:
                continue
            try:
                self._check_app(token)
            except DatamgrError as exc:
                self._ended[watch] = exc
                del self._watchers[watch]
                watch.end()

    def _running(self) -> None:
        if not self._discovery.running:
            raise FailedPrecondition("device discovery is off on this device (discovery.enabled = false)")

    def _device(self, peer: Peer) -> pb.Device:
        last_seen = time.time() - (self._discovery.clock() - peer.last_seen)
        return _device_message(peer.advert, peer.addresses, peer.port, peer.online, last_seen)

    @rpc
    async def GetLocalDevice(
        self, request: pb.GetLocalDeviceRequest, context: Any
    ) -> pb.GetLocalDeviceResponse:
        self._check(context)
        d = self._discovery
        device = _device_message(d.local, d.addresses, d.port, d.advertising)
        return pb.GetLocalDeviceResponse(device=device)

    @rpc
    async def ListDevices(self, request: pb.ListDevicesRequest, context: Any) -> pb.ListDevicesResponse:
        self._check(context)
        self._running()
        peers = self._discovery.table.peers()
        return pb.ListDevicesResponse(
            devices=[self._device(p) for p in peers if p.online or not request.online_only]
        )

    @rpc
    async def WatchDevices(
        self, request: pb.WatchDevicesRequest, context: Any
    ) -> AsyncIterator[pb.WatchDevicesResponse]:
        caller = self._check(context)
        self._running()
        events = self._discovery.events
        watch = events.watch()
        if caller is not None:
            self._watchers[watch] = caller
        try:
            snapshot = pb.DeviceSnapshot(devices=[self._device(p) for p in watch.peers])
            yield pb.WatchDevicesResponse(snapshot=snapshot)
            async for event in watch:
                if caller is not None:
                    self._check_app(caller[1])  # still allowed: a dict lookup per (rare) event
                message = pb.DeviceEvent(type=_EVENT_TYPES[event.kind], device=self._device(event.peer))
                yield pb.WatchDevicesResponse(event=message)
            if watch in self._ended:
                raise self._ended[watch]
            if watch.overflowed:
                raise ResourceExhausted("this device watch fell too far behind and was dropped")
            raise Unavailable("the daemon is stopping")
        finally:
            events.unwatch(watch)
            self._watchers.pop(watch, None)
            self._ended.pop(watch, None)
