"""Published data ("process data"): small key/value items an app hosts in the daemon for others to read.

An item is keyed by its URI `datashareproxy://{bundle}/{path}` and a subscriber id, as OpenHarmony keys
published data by (key, bundle, subscriberId); the bundle is part of the URI, so (key, subscriber_id) is
the primary key. A publish carries a version: an item stored with a newer version is not overwritten,
an equal or newer one overwrites. Each item succeeds or fails on its own (OpenHarmony returns one
OperationResult per item). After the commit the accepted items go to the feed, keyed by the publisher's
bundle, numbered so that a new subscriber can tell which of them its first snapshot already holds.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from datamgr.changefeed import Feed
from datamgr.datashare.published_items import (  # the SDK's half, without SQLAlchemy
    INVALID_ITEM,
    MAX_ITEMS,
    MAX_SUBSCRIBER_ID,
    OK,
    PERMISSION_DENIED,
    URI_INVALID,
    VERSION_NOT_NEWER,
    OperationResult,
    PublishedItem,
)
from datamgr.datashare.uri import parse_proxy_uri
from datamgr.errors import InvalidArgument

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
metadata = sa.MetaData()
published_table = sa.Table(
    "ds_published",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("subscriber_id", sa.String(MAX_SUBSCRIBER_ID), primary_key=True),
    sa.Column("bundle", sa.String(128), nullable=False, index=True),
    sa.Column("version", _BIGINT, nullable=False),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("blob", sa.LargeBinary, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class PublishedBatch:
    """The items one publish call stored, as the feed carries them; `seq` grows by one per such call."""

    seq: int
    bundle: str
    items: tuple[PublishedItem, ...]

    def nbytes(self) -> int:
        """About the bytes the batch holds (keys and data), for the feed's subscriber caps."""
        return sum(len(i.key) + len(i.data) + len(i.subscriber_id) for i in self.items)


def check_subscriber_id(subscriber_id: str) -> str:
    if len(subscriber_id) > MAX_SUBSCRIBER_ID:
        raise InvalidArgument(f"subscriber id longer than {MAX_SUBSCRIBER_ID} characters")
    return subscriber_id


def check_item(bundle: str, item: PublishedItem) -> OperationResult | None:
    """Why `bundle` may not publish `item` (a failed result), or None when it may."""
    try:
        uri = parse_proxy_uri(item.key)
    except InvalidArgument as exc:
        return OperationResult(item.key, URI_INVALID, exc.message)
    if uri.bundle != bundle:
        message = f"{item.key} names the data of {uri.bundle}; {bundle} publishes only its own"
        return OperationResult(item.key, PERMISSION_DENIED, message)
    if not isinstance(item.data, (str, bytes)):
        return OperationResult(item.key, INVALID_ITEM, f"item {item.key} has no data: give text or bytes")
    if len(item.subscriber_id) > MAX_SUBSCRIBER_ID:
        return OperationResult(item.key, INVALID_ITEM, f"subscriber id over {MAX_SUBSCRIBER_ID} characters")
    return None


def _item(row: sa.Row) -> PublishedItem:
    return PublishedItem(row.key, row.text if row.blob is None else row.blob, row.subscriber_id)


class PublishedStore:
    """The `ds_published` table. `publish`, `snapshot` and `remove` run on the database writer thread."""

    def __init__(self, engine: sa.Engine, feed: Feed[PublishedBatch]) -> None:
        self._engine = engine
        self._feed = feed
        self._seq = 0  # publish calls that stored something, since start; only the writer thread touches it
        metadata.create_all(engine)

    def publish(self, bundle: str, items: Sequence[PublishedItem], version: int) -> list[OperationResult]:
        """Stores the items of `bundle` in one transaction; one result per item, in order."""
        assert len(items) <= MAX_ITEMS, "the servicer caps items per call"
        t = published_table
        results: list[OperationResult] = []
        stored: list[PublishedItem] = []
        now = time.time()
        with self._engine.begin() as conn:
            for item in items:
                problem = check_item(bundle, item)
                if problem is not None:
                    results.append(problem)
                    continue
                where = (t.c.key == item.key) & (t.c.subscriber_id == item.subscriber_id)
                current = conn.execute(sa.select(t.c.version).where(where)).scalar_one_or_none()
                if current is not None and version < current:
                    message = f"version {version} is older than stored version {current}"
                    results.append(OperationResult(item.key, VERSION_NOT_NEWER, message))
                    continue
                is_text = isinstance(item.data, str)
                values = {
                    "version": version,
                    "text": item.data if is_text else None,
                    "blob": None if is_text else item.data,
                    "updated_at": now,
                }
                if current is None:
                    conn.execute(
                        sa.insert(t).values(
                            key=item.key, subscriber_id=item.subscriber_id, bundle=bundle, **values
                        )
                    )
                else:
                    conn.execute(sa.update(t).where(where).values(**values))
                results.append(OperationResult(item.key, OK))
                stored.append(item)
        if stored:
            self._seq += 1
            if self._feed.has_subscribers(bundle):
                self._feed.publish(bundle, [PublishedBatch(self._seq, bundle, tuple(stored))])
        return results

    def get(self, bundle: str) -> list[PublishedItem]:
        """Every item `bundle` has published, ordered by key and subscriber id."""
        t = published_table
        query = sa.select(t).where(t.c.bundle == bundle).order_by(t.c.key, t.c.subscriber_id)
        with self._engine.connect() as conn:
            return [_item(row) for row in conn.execute(query)]

    def snapshot(self, keys: Collection[tuple[str, str]]) -> tuple[int, list[PublishedItem]]:
        """The stored items among (key, subscriber_id) `keys`, and the `seq` of the last batch they hold.

        Runs on the writer thread, so no publish commits in between: feed batches with a larger seq are
        exactly the changes the snapshot does not hold yet.
        """
        t = published_table
        wanted = set(keys)
        query = sa.select(t).where(t.c.key.in_({k for k, _ in wanted})).order_by(t.c.key, t.c.subscriber_id)
        with self._engine.connect() as conn:
            items = [_item(row) for row in conn.execute(query) if (row.key, row.subscriber_id) in wanted]
        return self._seq, items

    def remove(self, bundle: str) -> None:
        """Deletes everything `bundle` published (when its app is removed)."""
        with self._engine.begin() as conn:
            conn.execute(sa.delete(published_table).where(published_table.c.bundle == bundle))
