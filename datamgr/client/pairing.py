"""PairingClient: the device owner's trust operations (pair, list, unpair, ping, levels, the audit log of
cross-device reads), admin token."""

from __future__ import annotations

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
from datamgr.v1 import pairing_pb2 as pb
from datamgr.v1 import pairing_pb2_grpc as pb_grpc
from datamgr.v1 import peer_pb2


class PairingClient:
    """Blocking client; reads the admin token from the daemon's data directory by default."""

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        token_path: Path | None = None,
        tls_fingerprint: str | None = None,
    ) -> None:
        self._channel = open_channel(address, tls_fingerprint)
        self._stub = pb_grpc.PairingServiceStub(self._channel)
        self._md = metadata(admin_token(token, token_path))

    def open_window(self, level: int = 0) -> Iterator[pb.OpenPairingWindowResponse]:
        """Opens a pairing window: yields `opened` (with the code), then `paired` or `closed`. The
        device that pairs gets security `level` (1-5; 0: the daemon's default, SL1). Closing the
        iterator early closes the window."""
        req = pb.OpenPairingWindowRequest(security_level=level)  # type: ignore[arg-type]
        stream = self._stub.OpenPairingWindow(req, metadata=self._md)
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                raise error_from_rpc(exc) from None
        finally:
            stream.cancel()

    def pair(self, address: str, code: str, level: int = 0) -> pb.TrustedDevice:
        """Pairs with the device whose pairing address (host:port) and code its owner shows, giving
        it security `level` (1-5; 0: the daemon's default, SL1), whatever it asserts."""
        req = pb.PairDeviceRequest(address=address, code=code, security_level=level)  # type: ignore[arg-type]
        return call(self._stub.PairDevice, req, metadata=self._md).device

    def trusted(self) -> list[pb.TrustedDevice]:
        return list(
            call(self._stub.ListTrustedDevices, pb.ListTrustedDevicesRequest(), metadata=self._md).devices
        )

    def unpair(self, device_id: str) -> pb.UnpairDeviceResponse:
        """Stops trusting `device_id` at once; `notified` says whether the device was told too."""
        return call(self._stub.UnpairDevice, pb.UnpairDeviceRequest(device_id=device_id), metadata=self._md)

    def ping(self, device_id: str, address: str = "") -> tuple[peer_pb2.PeerDeviceInfo, float]:
        """Hello to a trusted device over mutual TLS: (its info, round trip in ms)."""
        req = pb.PingDeviceRequest(device_id=device_id, address=address)
        resp = call(self._stub.PingDevice, req, metadata=self._md)
        return resp.device, resp.round_trip_ms

    def set_level(self, device_id: str, level: int) -> pb.TrustedDevice:
        """Confirms security `level` (1-5) for a trusted device."""
        req = pb.SetDeviceLevelRequest(device_id=device_id, security_level=level)  # type: ignore[arg-type]
        return call(self._stub.SetDeviceLevel, req, metadata=self._md).device

    def peer_reads(self, device_id: str = "", limit: int = 100) -> list[pb.PeerRead]:
        """The audit log of cross-device reads (of `device_id` only, if given), newest first."""
        req = pb.ListPeerReadsRequest(device_id=device_id, limit=limit)
        return list(call(self._stub.ListPeerReads, req, metadata=self._md).reads)

    def identity(self) -> pb.GetDeviceIdentityResponse:
        return call(self._stub.GetDeviceIdentity, pb.GetDeviceIdentityRequest(), metadata=self._md)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PairingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
