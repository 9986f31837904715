"""The audit log of cross-device reads: kept in the database, newest first, bounded by count and age."""

from __future__ import annotations

import asyncio
from pathlib import Path

from datamgr.device.peer_reads import AuditConfig, Direction, PeerRead, PeerReadLog
from datamgr.storage import Database, create_engine


def _log(tmp_path: Path, **config: float) -> tuple[PeerReadLog, Database]:
    db = Database(create_engine(f"sqlite:///{tmp_path / 'audit.db'}"), 1)
    return PeerReadLog(db, AuditConfig(**config)), db  # type: ignore[arg-type]


def _read(n: int, at: float, device: str = "dev-a") -> PeerRead:
    return PeerRead(Direction.SERVED, device, "com.example.reader", f"udmf://drag/x/{n}", n, "OK", at)


def test_newest_first_filtered_and_bounded_by_count(tmp_path: Path) -> None:
    log, db = _log(tmp_path, max_entries=5)
    for n in range(8):
        log.record(_read(n, 1000.0 + n, "dev-a" if n % 2 else "dev-b"))
    assert [r.bytes for r in log.recent()] == [7, 6, 5, 4, 3]  # the 5 newest
    assert [r.bytes for r in log.recent("dev-a", limit=2)] == [7, 5]
    assert log.recent()[0] == _read(7, 1007.0)
    db.close()


def test_old_entries_go(tmp_path: Path) -> None:
    log, db = _log(tmp_path, max_age_s=60)
    log.record(_read(1, 1000.0))
    log.record(_read(2, 1030.0))
    log.record(_read(3, 1070.0))  # 1000 is now more than 60 s before the newest
    assert [r.bytes for r in log.recent()] == [3, 2]
    db.close()


def test_note_writes_on_the_database_writer_without_waiting(tmp_path: Path) -> None:
    log, db = _log(tmp_path)

    async def main() -> None:
        log.note(_read(1, 0.0))  # stamped now
        await log.drain()

    asyncio.run(main())
    [read] = log.recent()
    assert read.at > 1_000_000_000 and read.key == "udmf://drag/x/1"
    db.close()
