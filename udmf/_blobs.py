"""Large values as files under `{data_dir}/udmf/blobs/`, written and read chunk by chunk off the loop.

A blob file is written as its chunks stream in (batched, one batch in a worker thread while the next
fills), fsynced, and only then is the row naming it committed; so an acknowledged write survives
kill -9, and a crash mid-write leaves only files no row names, which `remove_orphans` deletes at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from udmf.errors import NotFound

WRITE_BATCH_BYTES = 1 << 20
_NAME = re.compile(r"[0-9a-f]{32}\.blob")


class BlobDir:
    """The blob directory; every method but `writer`/`chunks` is blocking (run it in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def names(self) -> set[str]:
        return {p.name for p in self.path.iterdir() if _NAME.fullmatch(p.name)}

    def sync(self) -> None:
        """fsyncs the directory, so new names survive a crash."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()

    def remove_orphans(self, referenced: set[str]) -> int:
        """Deletes the blob files no row names; returns how many."""
        orphans = self.names() - referenced
        self.remove(orphans)
        return len(orphans)

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    async def chunks(self, name: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        """The file's bytes in chunks of `chunk_bytes`, each read in a worker thread while the one
        before it is sent (one chunk ahead: the disk and the socket work at the same time)."""
        try:
            f = await asyncio.to_thread(open, self.path / name, "rb")
        except FileNotFoundError:
            raise NotFound("the data was deleted while it was being read") from None
        loop = asyncio.get_running_loop()
        ahead = loop.run_in_executor(None, f.read, chunk_bytes)
        try:
            while chunk := await ahead:
                ahead = loop.run_in_executor(None, f.read, chunk_bytes)
                yield chunk
        finally:  # a read still running closes the file when it ends

            def close(fut: asyncio.Future[bytes]) -> None:
                f.close()
                if not fut.cancelled():
                    fut.exception()  # retrieved: a failed read-ahead nobody waits for is not an error

            if ahead.done():
                close(ahead)
            else:
                ahead.add_done_callback(close)


def _write_all(fd: int, buffers: list[bytes]) -> None:
    for buf in buffers:
        view = memoryview(buf)
        while view:
            view = view[os.write(fd, view) :]


class BlobWriter:
    """One new blob file, written from the event loop without blocking it. Not thread-safe."""

    def __init__(self, blobs: BlobDir) -> None:
        self._blobs = blobs
        self.name = secrets.token_hex(16) + ".blob"
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flushing: asyncio.Future[None] | None = None
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= WRITE_BATCH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self._flushing is not None:
            flushing, self._flushing = self._flushing, None
            await flushing  # one batch in flight at a time: memory stays at two batches
        if self._fd is None:
            self._fd = await asyncio.to_thread(self._open)
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if batch:
            self._flushing = asyncio.ensure_future(asyncio.to_thread(_write_all, self._fd, batch))

    def _open(self) -> int:
        return os.open(self._blobs.path / self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    async def finish(self) -> None:
        """Writes what is left and fsyncs the file (the directory is synced by the caller, once)."""
        await self._flush()
        if self._flushing is not None:
            flushing, self._flushing = self._flushing, None
            await flushing
        assert self._fd is not None
        fd, self._fd = self._fd, None
        await asyncio.to_thread(_sync_close, fd)

    async def discard(self) -> None:
        """Closes and deletes the file. The clean-up is scheduled before the first await, so it runs
        even if the caller is cancelled meanwhile (it waits for the write in flight, which holds the
        descriptor)."""
        await asyncio.shield(self._schedule_cleanup())

    def _schedule_cleanup(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        fd, self._fd = self._fd, None
        flushing, self._flushing = self._flushing, None
        self._pending = []

        def settle(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled():
                fut.exception()  # retrieved: a failed clean-up leaves an orphan, removed at start
            if not done.done():
                done.set_result(None)

        def run(prior: asyncio.Future[None] | None = None) -> None:
            if prior is not None and not prior.cancelled():
                prior.exception()  # the write's own error was reported by whoever awaited it
            loop.run_in_executor(None, self._close_and_remove, fd).add_done_callback(settle)

        if flushing is None or flushing.done():
            run(flushing)
        else:
            flushing.add_done_callback(run)
        return done

    def _close_and_remove(self, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)
        self._blobs.remove([self.name])


def _sync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
