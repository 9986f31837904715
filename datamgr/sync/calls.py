"""The wire of the apps' Sync calls: KvStoreService.Sync and DataShareService.Sync share KvSyncMode and
KvDeviceSyncStatus. What a request asks for, checked, and the statuses its answer carries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from datamgr.errors import InvalidArgument
from datamgr.kv.storage import MAX_DEVICE_ID_LENGTH
from datamgr.sync.engine import SyncCode, SyncMode, SyncStatus
from datamgr.v1 import kv_pb2 as pb

_MODES = {
    pb.KV_SYNC_MODE_UNSPECIFIED: SyncMode.PUSH_PULL,
    pb.KV_SYNC_MODE_PULL_ONLY: SyncMode.PULL_ONLY,
    pb.KV_SYNC_MODE_PUSH_ONLY: SyncMode.PUSH_ONLY,
    pb.KV_SYNC_MODE_PUSH_PULL: SyncMode.PUSH_PULL,
}
_CODES = {
    SyncCode.OK: pb.KV_SYNC_CODE_OK,
    SyncCode.PARTIAL: pb.KV_SYNC_CODE_PARTIAL,
    SyncCode.SKIPPED: pb.KV_SYNC_CODE_SKIPPED,
    SyncCode.ERROR: pb.KV_SYNC_CODE_ERROR,
}


def requested(mode: pb.KvSyncMode, device_ids: Iterable[str]) -> tuple[SyncMode, list[str]]:
    """The mode (unspecified: PUSH_PULL) and the devices of a Sync request; InvalidArgument if either
    is malformed."""
    sync_mode = _MODES.get(mode)
    if sync_mode is None:
        raise InvalidArgument(f"unknown sync mode {mode}")
    devices = list(device_ids)
    for device in devices:
        if not 1 <= len(device) <= MAX_DEVICE_ID_LENGTH:
            raise InvalidArgument(f"invalid device id {device!r}: 1-{MAX_DEVICE_ID_LENGTH} characters")
    return sync_mode, devices


def statuses(by_device: Mapping[str, SyncStatus]) -> list[pb.KvDeviceSyncStatus]:
    """One status message per device, in the order given."""
    return [
        pb.KvDeviceSyncStatus(
            device_id=device, code=_CODES[s.code], message=s.message, pushed=s.pushed, pulled=s.pulled
        )
        for device, s in by_device.items()
    ]
