"""DeviceClient: this device and the devices discovered around it, from the daemon's DeviceService."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc

from datamgr.connection import (
    admin_token,
    call,
    error_from_rpc,
    metadata,
    open_channel,
)
from datamgr.v1 import devices_pb2 as pb
from datamgr.v1 import devices_pb2_grpc as pb_grpc


class DeviceClient:
    """Blocking client. The token: `token`, else DATAMGR_TOKEN (an app holding
    ohos.permission.DISTRIBUTED_DATASYNC), else the admin token in the daemon's data directory."""

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        token_path: Path | None = None,
        tls_fingerprint: str | None = None,
    ) -> None:
        token = admin_token(token or os.environ.get("DATAMGR_TOKEN") or None, token_path)
        self._channel = open_channel(address, tls_fingerprint)
        self._stub = pb_grpc.DeviceServiceStub(self._channel)
        self._md = metadata(token)

    def local_device(self) -> pb.Device:
        return call(self._stub.GetLocalDevice, pb.GetLocalDeviceRequest(), metadata=self._md).device

    def list_devices(self, online_only: bool = False) -> list[pb.Device]:
        req = pb.ListDevicesRequest(online_only=online_only)
        return list(call(self._stub.ListDevices, req, metadata=self._md).devices)

    def watch(self, timeout: float | None = None) -> Iterator[pb.WatchDevicesResponse]:
        """The table (first message, `snapshot`), then every `event`, until `timeout` seconds have passed
        (if given) or the iterator is closed."""
        stream = self._stub.WatchDevices(pb.WatchDevicesRequest(), metadata=self._md, timeout=timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            ended = exc.code() is grpc.StatusCode.CANCELLED
            if not ended and not (timeout is not None and exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED):
                raise error_from_rpc(exc) from None
        finally:
            stream.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
