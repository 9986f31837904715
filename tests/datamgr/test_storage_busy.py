"""Database.busy: how many of its threads run a job now (the model's inference gives way to them)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from datamgr.storage import Database, create_engine


def test_busy_counts_running_reads_and_writes(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"), read_threads=2)
        go, reading, writing = threading.Event(), threading.Event(), threading.Event()

        def hold(started: threading.Event) -> int:
            started.set()
            assert go.wait(10)
            return 1

        try:
            assert db.busy() == 0
            read = asyncio.ensure_future(db.read(hold, reading))
            write = asyncio.ensure_future(db.write(hold, writing))
            for started in (reading, writing):
                await asyncio.to_thread(started.wait, 10)
            assert db.busy(longer_than_s=0) == 2
            await asyncio.sleep(0.01)
            assert db.busy() == 2
            go.set()
            assert await read == 1 and await write == 1
            assert db.busy() == 0
        finally:
            go.set()
            db.close()

    asyncio.run(run())
