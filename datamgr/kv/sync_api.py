"""What an app's Sync call asks and answers: the modes, the per-device status, and their wire form
(KvStoreService.Sync and DataShareService.Sync share KvSyncMode and KvDeviceSyncStatus).

Defined here, beside the stores, so that the KV and DataShare services call the daemon's sync (handed
to them as a function) without importing it: `datamgr.sync` depends on `datamgr.kv`, never back."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from datamgr.errors import InvalidArgument
from datamgr.kv.storage import MAX_DEVICE_ID_LENGTH
from datamgr.v1 import kv_pb2 as pb


class SyncMode(enum.IntEnum):
    """OpenHarmony's distributedKVStore.SyncMode values."""

    PULL_ONLY = 0
    PUSH_ONLY = 1
    PUSH_PULL = 2


class SyncCode(enum.StrEnum):
    OK = "OK"  # everything asked for was done
    PARTIAL = "PARTIAL"  # some of it was done; the message says what stopped the rest
    SKIPPED = "SKIPPED"  # nothing was done: the security rule does not allow it
    ERROR = "ERROR"  # nothing was done: the message says why


@dataclass(frozen=True, slots=True)
class SyncStatus:
    code: SyncCode
    message: str = ""
    pushed: int = 0  # our changes that took effect on the peer
    pulled: int = 0  # the peer's changes that took effect here


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
