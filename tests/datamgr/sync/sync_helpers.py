"""Helpers for sync tests over a SimNet: one store, S, on every replica."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from simnet import Replica, SimNet

from datamgr.kv.storage import StoreKind, Value
from datamgr.kv.sync_api import SyncMode, SyncStatus

T = TypeVar("T")
S = "com.example.notes/notes"
SV, DC = StoreKind.SINGLE_VERSION, StoreKind.DEVICE_COLLABORATION
PUSH, PULL, BOTH = SyncMode.PUSH_ONLY, SyncMode.PULL_ONLY, SyncMode.PUSH_PULL


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def with_store(net: SimNet, *names: str, kind: StoreKind = SV, label: int = 2, **kw: Any) -> list[Replica]:
    """New replicas, each with store S."""
    out = []
    for name in names:
        r = net.add(name, **kw)
        r.storage.create_store("com.example.notes", "notes", kind, label)
        out.append(r)
    return out


def put(r: Replica, **values: int | str) -> None:
    r.storage.write(S, [(k.encode(), Value.of(x)) for k, x in values.items()])


def sync(r: Replica, peer: str, mode: SyncMode = BOTH) -> SyncStatus:
    return run(r.engine.sync(S, [peer], mode))[peer]


def live(r: Replica, device: str | None = None) -> dict[bytes, object]:
    return {k: val.data for k, val, _ in r.storage.scan(S, device=device)}


def epoch(r: Replica) -> str:
    info = r.storage.get_store(S)
    assert info is not None
    return info.epoch
