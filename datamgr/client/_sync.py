"""How an app's sync went, per device: shared by the KV and DataShare clients (both ride the same
engine, `datamgr.sync`)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from datamgr.v1 import kv_pb2 as pb


class SyncMode(enum.IntEnum):
    """distributedKVStore.SyncMode (the wire values are shifted by one for the zero value)."""

    PULL_ONLY = pb.KV_SYNC_MODE_PULL_ONLY
    PUSH_ONLY = pb.KV_SYNC_MODE_PUSH_ONLY
    PUSH_PULL = pb.KV_SYNC_MODE_PUSH_PULL


@dataclass(frozen=True, slots=True)
class SyncResult:
    """How a sync with one device went: `code` OK, PARTIAL, SKIPPED (the security rule) or ERROR (the
    message starts with the error code, e.g. UNAUTHENTICATED); changes pushed there and pulled here."""

    code: str
    message: str
    pushed: int
    pulled: int

    @property
    def ok(self) -> bool:
        return self.code == "OK"


class _SyncResponse(Protocol):
    @property
    def statuses(self) -> Iterable[pb.KvDeviceSyncStatus]: ...


def sync_results(resp: _SyncResponse) -> dict[str, SyncResult]:
    return {
        s.device_id: SyncResult(
            pb.KvSyncCode.Name(s.code).removeprefix("KV_SYNC_CODE_"), s.message, s.pushed, s.pulled
        )
        for s in resp.statuses
    }
