"""What the daemon hands to aicap, as protocols aicap declares itself (it imports nothing of datamgr).

`Identify(context)` is the call's caller: an app (its bundle and permissions) or the device owner
(`is_admin`); it raises an error carrying UNAUTHENTICATED for a call without a known token, which the
server's edge turns into that status. `Database` is the daemon's database: its engine, and the runner
of writes (on the one writer thread, committed). `Peers` are the paired devices generations may be
offloaded to, and that keep preempted sequences' KV for the engines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol, TypeVar

import grpc
import sqlalchemy as sa

from aicap.engine.llm_engine import TokenEvent
from aicap.kv_state import KvState
from aicap.placement import Load

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


class Peers(Protocol):
    """Paired devices that may run this device's generations (`datamgr.ai_bridge`): only those the
    owner allows prompts to reach (confirmed security level at least `ai.offload_min_level`) that serve
    this device and hold the model file with `digest`. Their errors are aicap's (Unavailable when a
    device cannot be reached or was lost mid-stream)."""

    @property
    def device_id(self) -> str: ...

    async def loads(self, digest: str, device: str = "", exclude: frozenset[str] = frozenset()) -> list[Load]:
        """The eligible devices' loads (fresh within about a second), not asking those in `exclude`
        (lost by the generation being placed: asking a dead one costs a connection attempt);
        `device`: only that one, or an error saying why it cannot run the request."""
        ...

    def generate(
        self,
        device: str,
        app: str,
        digest: str,
        tokens: list[int],
        params: Any,
        skip_draws: int = 0,
        replayed: int = 0,
    ) -> AsyncGenerator[TokenEvent, None]:
        """Runs the request (`params` an aicap.v1.SamplingParams; `skip_draws` random draws already
        made elsewhere; `replayed` of the tokens output already streamed, which a response format
        constrained) on `device` and yields its events; HandedOver at the end if the device handed
        it back with its KV state (it drains);
        closing the generator ends it there and frees its KV."""
        ...

    async def prefill(self, device: str, app: str, digest: str, tokens: list[int]) -> KvState:
        """The KV state of `tokens` but the last, computed on `device`."""
        ...

    # the engine's remote KV store (aicap.engine.remote_swap.KvKeeper): preempted sequences' KV kept
    # in paired devices' memory beyond this device's swap budget (Infinite-LLM)

    async def keep_kv(self, state: KvState, app: str) -> tuple[str, str]:
        """Keeps a swapped-out state (of a sequence of `app`) on the eligible device with the most room
        for it (any model file; its level and serving as for generations): (device, handle)."""
        ...

    async def return_kv(self, handle: tuple[str, str]) -> KvState:
        """The state `keep_kv` kept, which the device then forgets."""
        ...

    async def drop_kv(self, handle: tuple[str, str]) -> None:
        """Tells the device to forget a kept state."""
        ...
