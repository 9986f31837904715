"""The DeviceService servicer: this device and the peer table of discovery, over gRPC.

Callers are the device owner (admin token) or apps holding ohos.permission.DISTRIBUTED_DATASYNC, the
permission OpenHarmony asks of apps that list devices to sync with.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from datamgr.apps import DISTRIBUTED_DATASYNC, App
from datamgr.caller import Identify
from datamgr.device.advert import Advert
from datamgr.device.discovery import Discovery
from datamgr.device.peer_table import DeviceWatch, EventKind, Peer
from datamgr.errors import (
    DatamgrError,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
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
    def __init__(self, discovery: Discovery, identify: Identify) -> None:
        self._discovery = discovery
        self._identify = identify
        self._watchers: dict[DeviceWatch, tuple[str, Any]] = {}  # open app watches: bundle, call context
        self._ended: dict[DeviceWatch, DatamgrError] = {}  # watches ended by a revoke, and why

    def add_to(self, server: Any) -> None:
        pb_grpc.add_DeviceServiceServicer_to_server(self, server)

    def _check(self, context: Any) -> tuple[str, Any] | None:
        """The caller's (bundle, context) if it is an app allowed to list devices; None for the owner."""
        caller = self._identify(context)
        return None if caller.is_admin else (self._allowed(caller), context)

    def _allowed(self, app: App) -> str:
        if DISTRIBUTED_DATASYNC not in app.permissions:
            raise PermissionDenied(f"{app.bundle} lacks {DISTRIBUTED_DATASYNC}, which listing devices needs")
        return app.bundle

    def revoked(self, bundle: str) -> None:
        """The owner revoked a permission of `bundle` or removed it (on the loop): its watches that
        may no longer list devices end now."""
        for watch, (owner, context) in list(self._watchers.items()):
            if owner != bundle:
                continue
            try:
                self._check(context)
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

    async def GetLocalDevice(
        self, request: pb.GetLocalDeviceRequest, context: Any
    ) -> pb.GetLocalDeviceResponse:
        self._check(context)
        d = self._discovery
        device = _device_message(d.local, d.addresses, d.port, d.advertising)
        return pb.GetLocalDeviceResponse(device=device)

    async def ListDevices(self, request: pb.ListDevicesRequest, context: Any) -> pb.ListDevicesResponse:
        self._check(context)
        self._running()
        peers = self._discovery.table.peers()
        return pb.ListDevicesResponse(
            devices=[self._device(p) for p in peers if p.online or not request.online_only]
        )

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
                    self._check(caller[1])  # still allowed: a token lookup per (rare) event
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
