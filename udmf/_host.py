"""What the daemon hands to udmf, as protocols udmf declares itself (it imports nothing of datamgr).

`Identify(context)` is the call's caller: an app (its bundle and permissions) or the device owner
(`is_admin`); it raises an error carrying UNAUTHENTICATED for a call without a known token, which the
server's edge turns into that status. `Database` is the daemon's database: its engine, and the runners
of writes (on the one writer thread, committed) and reads (on the reader threads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import grpc
import sqlalchemy as sa

T = TypeVar("T")


class Caller(Protocol):
    @property
    def bundle(self) -> str: ...

    @property
    def permissions(self) -> frozenset[str]: ...

    @property
    def is_admin(self) -> bool: ...


Identify = Callable[[grpc.aio.ServicerContext], Caller]


class Database(Protocol):
    @property
    def engine(self) -> sa.Engine: ...

    async def write(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def read(self, fn: Callable[..., T], *args: Any) -> T: ...
