"""The hooks through which the daemon carries CROSS_DEVICE data to paired devices.

udmf imports nothing of the daemon; the daemon's bridge (`datamgr.udmf_bridge.bridge`) implements
`Replication` and hands it to `UdmfService.replicate`. Then:

- the store calls `wrote` / `deleted` inside the transaction of every local write and delete (insert,
  update, lazy fill; delete, consuming read, expiry) and `after_commit` after it, so the bridge keeps its
  descriptors in step with the data, in the same commit;
- the bridge puts the data other devices describe into the store as remote rows (`UdmfStore.put_remote`,
  `delete_remote`, inside its own transaction): `DataRow.origin` names the device holding the data, and
  `copied` says its entries came along (small DATA_HUB data);
- reads of a remote row that is not copied, and every read of a remote drag, go to its device through
  `fetch`; that device answers with `UdmfService.serve_peer`, which streams `serialize_read`-framed
  ReadResponses, deciding from its own records what leaves and what the read consumes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from udmf._fastwire import serialize_read

if TYPE_CHECKING:
    from udmf.store import DataRow, EntryRow

__all__ = ["Replication", "serialize_read"]


class Replication(Protocol):
    def wrote(self, conn: sa.Connection, row: DataRow, entries: Sequence[EntryRow]) -> None:
        """This device's CROSS_DEVICE data `row` was stored (new, updated or a lazy drag's fill), in
        `conn`'s transaction. A UdmfError refuses the write."""

    def deleted(self, conn: sa.Connection, keys: Sequence[str]) -> None:
        """This device's CROSS_DEVICE data under `keys` was deleted, or stopped being CROSS_DEVICE, in
        `conn`'s transaction."""

    def after_commit(self) -> None:
        """A transaction that called `wrote` or `deleted` committed."""

    def fetch(self, origin: str, key: str, reader: str) -> AsyncIterator[Any]:
        """The ReadResponses of the data under `key` from device `origin`, for app `reader` here; that
        device consumes a drag it serves. Raises a UdmfError: NotFound when the device no longer has
        it (or does not let it leave), Unavailable when it cannot be reached (nothing was consumed)."""
        ...
