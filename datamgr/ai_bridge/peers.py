"""The paired devices this device's apps may offload generations to (`aicap._host.Peers`).

A device is asked only if the owner confirmed its security level at `ai.offload_min_level` or above and
it has been seen where it can be reached. Its load (AiPeerService.GetLoad) is asked for at most once a
`LOAD_TTL_S` and within `LOAD_TIMEOUT_S`; a device that does not serve this device, lacks the model
file or does not answer is left out of AUTO placement, and named by an app it is an error that says
which of these it is. A generation runs as one streamed call; a device that drops it (killed, cut off:
the channel's keepalive notices within seconds) is aicap's Unavailable, from which aicap replays the
generation elsewhere. Every offloaded generation is in the audit log (key `ai:<model digest>`).

They also keep this device's swapped-out KV (the engines' remote store, `keep_kv`): a state goes to
the eligible device (level and serving as above; any model file) whose load reports the most room for
this device's states (`kv_keep_free`, then the fewest running), and comes back or is dropped by its
handle there. Each of these calls is audited too (keys `ai-kv-keep`, `ai-kv-return`, `ai-kv-drop`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable

import grpc

from aicap.engine.llm_engine import TokenEvent
from aicap.errors import (
    BY_CODE,
    AicapError,
    FailedPrecondition,
    HandedOver,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from aicap.kv_state import KvState
from aicap.placement import Load
from aicap.v1 import aicap_pb2
from datamgr.device.peer_channel import PeerChannels
from datamgr.device.peer_reads import Direction, PeerRead, PeerReadLog
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import NotFound as DeviceNotFound
from datamgr.sync.v1 import ai_peer_pb2 as pb
from datamgr.sync.v1 import ai_peer_pb2_grpc as pb_grpc

log = logging.getLogger("datamgr.ai_bridge")

LOAD_TTL_S = 1.0
LOAD_TIMEOUT_S = 1.0
KV_TIMEOUT_S = 10.0  # a KV state's transfer: this, plus a second per MB (a link of at least 1 MB/s)
_LOST = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
_FINISH = {1: "stop", 2: "length"}


class AiPeers:
    def __init__(
        self,
        device_id: str,
        trust: TrustStore,
        channels: PeerChannels,
        min_level: int,
        audit: PeerReadLog,
        online: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self._device_id, self._trust, self._channels = device_id, trust, channels
        self._min_level, self._audit, self._online = min_level, audit, online
        self._loads: dict[str, tuple[float, pb.PeerLoad | BaseException, float]] = {}  # id → (at, load, rtt)
        # prompt tokens sent to each device since its load was last asked for: counted as waiting there,
        # so that requests placed within one load's lifetime do not all herd to the same device
        self._sent: dict[str, int] = {}
        self._running: dict[str, int] = {}  # this device's generations running on each device now
        self._kept: dict[tuple[str, str], tuple[int, str]] = {}  # (device, handle) → (bytes, app) kept there

    @property
    def device_id(self) -> str:
        return self._device_id

    async def loads(self, digest: str, device: str = "", exclude: frozenset[str] = frozenset()) -> list[Load]:
        if device:  # asked afresh: an app naming a device should not get a second-old refusal
            return [await self._eligible(self._named(device), digest, fresh=True)]
        candidates = [
            d
            for d in self._trust.all()
            if d.security_level >= self._min_level
            and self._online(d.device_id)
            and d.device_id not in exclude
        ]
        found = await asyncio.gather(*(self._eligible(d, digest) for d in candidates), return_exceptions=True)
        return [f for f in found if isinstance(f, Load)]

    def _named(self, device_id: str) -> TrustedDevice:
        try:
            device = self._trust.get(device_id)
        except DeviceNotFound:
            raise FailedPrecondition(f"device {device_id} is not paired with this device") from None
        if device.security_level < self._min_level:
            raise PermissionDenied(
                f"device {device.name} ({device_id}) holds security level SL{device.security_level}, below "
                f"ai.offload_min_level SL{self._min_level}: prompts do not go there"
            )
        return device

    async def _eligible(self, device: TrustedDevice, digest: str, fresh: bool = False) -> Load:
        """The device's load, if it can run a generation of the model with `digest` for this device."""
        load, rtt = await self._load(device, fresh)
        who = f"device {device.name} ({device.device_id})"
        if not load.serves:
            raise PermissionDenied(f"{who} does not run generations for this device (its ai.serve_peers)")
        if not any(m.digest == digest for m in load.models):
            raise FailedPrecondition(f"{who} has no model file with digest {digest[:16]}... (the same GGUF)")
        running = self._running.get(device.device_id, 0)
        if load.peer_max_concurrent and running >= load.peer_max_concurrent:
            raise ResourceExhausted(
                f"{who} already runs {running} of this device's generations, its limit "
                f"(its ai.peer_max_concurrent {load.peer_max_concurrent})"
            )
        return Load(
            device=device.device_id,
            name=device.name,
            waiting=load.requests_waiting,
            running=load.requests_running,
            max_running=load.max_running or 1,
            tokens_waiting=load.tokens_waiting + self._sent.get(device.device_id, 0),
            prefill_tokens_per_s=load.prefill_tokens_per_s,
            decode_step_s=load.decode_step_s,
            rtt_s=rtt,
            cache_type=load.cache_type,
        )

    async def _load(self, device: TrustedDevice, fresh: bool = False) -> tuple[pb.PeerLoad, float]:
        now = time.monotonic()
        cached = self._loads.get(device.device_id)
        if cached is not None and now - cached[0] < LOAD_TTL_S and not fresh:
            _, found, rtt = cached
        else:
            found, rtt = await self._ask_load(device)
            self._loads[device.device_id] = (now, found, rtt)
            self._sent.pop(device.device_id, None)
        if isinstance(found, BaseException):
            raise found
        return found, rtt

    async def _ask_load(self, device: TrustedDevice) -> tuple[pb.PeerLoad | BaseException, float]:
        try:
            _, channel, _ = self._channels.get(device.device_id)
        except (LookupError, DeviceNotFound) as exc:
            return Unavailable(f"{exc}: the generation cannot go there"), 0.0
        started = time.monotonic()
        try:
            load = await pb_grpc.AiPeerServiceStub(channel).GetLoad(
                pb.GetLoadRequest(), timeout=LOAD_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _LOST:
                self._channels.drop(device.device_id, channel)
            return _error(exc, f"device {device.name} ({device.device_id})"), 0.0
        return load, time.monotonic() - started

    def _paired(self, device: str) -> bool:
        try:
            self._trust.get(device)
        except DeviceNotFound:
            return False
        return True

    def _channel(self, device: str, what: str) -> tuple[str, grpc.aio.Channel]:
        """How to name the device in errors, and a channel to it."""
        named = self._named(device)
        try:
            _, channel, _ = self._channels.get(device)
        except LookupError as exc:
            raise Unavailable(f"{exc}: the {what} cannot go there") from None
        return f"device {named.name} ({device})", channel

    async def generate(
        self,
        device: str,
        app: str,
        digest: str,
        tokens: list[int],
        params: aicap_pb2.SamplingParams,
        skip_draws: int = 0,
        replayed: int = 0,
    ) -> AsyncGenerator[TokenEvent, None]:
        who, channel = self._channel(device, "generation")
        request = pb.PeerGenerateRequest(
            app=app,
            model_digest=digest,
            tokens=tokens,
            params=params,
            skip_draws=skip_draws,
            replayed=replayed,
        )
        call = pb_grpc.AiPeerServiceStub(channel).Generate(request)
        self._sent[device] = self._sent.get(device, 0) + len(tokens)
        self._running[device] = self._running.get(device, 0) + 1
        received, outcome = 0, "CANCELLED"
        handed: list[bytes] = []  # a draining device's KV state, after its last tokens
        finished = 0  # samples that ended
        try:
            async for msg in call:
                if not self._paired(device):  # the owner unpaired it meanwhile: not one token more
                    raise Unavailable(f"{who} is no longer paired with this device")
                if msg.kv_state:
                    handed.append(msg.kv_state)
                    received += len(msg.kv_state) // 4  # the audit counts 4 bytes a unit
                    continue
                for t in msg.tokens:
                    received += 1
                    finished += t.finish_reason != 0
                    yield TokenEvent(
                        seq_id=0,
                        token=t.token,
                        finished=t.finish_reason != 0,
                        index=t.index,
                        logprob=t.logprob if t.HasField("logprob") else None,
                        finish_reason=_FINISH.get(t.finish_reason),
                        cached_tokens=t.cached_tokens,
                    )
            outcome = "OK"
            if not handed and finished < (params.n or 1):
                raise Unavailable(f"{who} ended the generation before it finished")
            if handed:  # the device drains: it handed the generation back with its KV state
                try:
                    state = KvState.from_chunks(handed)
                except AicapError as exc:
                    raise Unavailable(f"{who} handed a generation back, its KV state broken: {exc}") from None
                raise HandedOver(f"{who} is draining: it handed the generation back", state)
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            if exc.code() in _LOST:
                self._channels.drop(device, channel)
                self._loads.pop(device, None)
            if received and exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # it stopped serving us
                raise Unavailable(f"{who} stopped the generation: {exc.details()}") from None
            raise _error(exc, who) from None
        finally:
            self._running[device] -= 1
            if not self._running[device]:
                del self._running[device]
            call.cancel()  # the app went away: the device ends the generation and frees its KV
            self._audit.note(
                PeerRead(Direction.FETCHED, device, app, f"ai:{digest[:16]}", 4 * received, outcome)
            )

    async def prefill(self, device: str, app: str, digest: str, tokens: list[int]) -> KvState:
        who, channel = self._channel(device, "prefill")
        request = pb.PeerPrefillRequest(app=app, model_digest=digest, tokens=tokens)
        call = pb_grpc.AiPeerServiceStub(channel).Prefill(request)
        chunks: list[bytes] = []
        outcome = "CANCELLED"
        try:
            async for msg in call:
                chunks.append(msg.data)
            outcome = "OK"
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            if exc.code() in _LOST:
                self._channels.drop(device, channel)
            raise _error(exc, who) from None
        finally:
            call.cancel()
            received = sum(len(c) for c in chunks)
            self._audit.note(
                PeerRead(Direction.FETCHED, device, app, f"ai-prefill:{digest[:16]}", received, outcome)
            )
        return KvState.from_chunks(chunks)

    # ---- swapped-out KV kept on paired devices (aicap.engine.remote_swap.KvKeeper) ----

    async def keep_kv(self, state: KvState, app: str) -> tuple[str, str]:
        chunks = await asyncio.to_thread(lambda: list(state.to_chunks()))
        size = sum(len(c) for c in chunks)
        candidates = [
            d for d in self._trust.all() if d.security_level >= self._min_level and self._online(d.device_id)
        ]
        found = await asyncio.gather(*(self._load(d) for d in candidates), return_exceptions=True)
        room = [
            (d.device_id, f[0])
            for d, f in zip(candidates, found, strict=True)
            if not isinstance(f, BaseException) and f[0].serves and f[0].kv_keep_free >= size
        ]
        if not room:
            raise Unavailable(f"no paired device has room to keep {size} bytes of KV state for this device")
        device, load = max(room, key=lambda r: (r[1].kv_keep_free, -r[1].requests_running))
        load.kv_keep_free -= size  # spoken for, until the device is asked again
        who, channel = self._channel(device, "KV state")
        sent, outcome = 0, "CANCELLED"
        try:
            reply = await pb_grpc.AiPeerServiceStub(channel).KeepKv(
                iter([pb.KvChunk(data=c) for c in chunks]), timeout=_kv_timeout(size)
            )
            sent, outcome = size, "OK"
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            raise self._kv_error(exc, device, channel, who) from None
        finally:
            self._audit.note(PeerRead(Direction.FETCHED, device, app, "ai-kv-keep", sent, outcome))
        self._kept[(device, reply.handle)] = (size, app)
        return device, reply.handle

    async def return_kv(self, handle: tuple[str, str]) -> KvState:
        device, key = handle
        size, app = self._kept.pop(handle, (0, ""))
        who, channel = self._kv_channel(device)
        call = pb_grpc.AiPeerServiceStub(channel).ReturnKv(
            pb.ReturnKvRequest(handle=key), timeout=_kv_timeout(size)
        )
        chunks: list[bytes] = []
        outcome = "CANCELLED"
        try:
            async for msg in call:
                chunks.append(msg.data)
            outcome = "OK"
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            raise self._kv_error(exc, device, channel, who) from None
        finally:
            call.cancel()
            received = sum(len(c) for c in chunks)
            self._audit.note(PeerRead(Direction.FETCHED, device, app, "ai-kv-return", received, outcome))
        return await asyncio.to_thread(KvState.from_chunks, chunks)

    async def drop_kv(self, handle: tuple[str, str]) -> None:
        device, key = handle
        _, app = self._kept.pop(handle, (0, ""))
        who, channel = self._kv_channel(device)
        outcome = "CANCELLED"
        try:
            await pb_grpc.AiPeerServiceStub(channel).DropKv(
                pb.DropKvRequest(handle=key), timeout=KV_TIMEOUT_S
            )
            outcome = "OK"
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            raise self._kv_error(exc, device, channel, who) from None
        finally:
            self._audit.note(PeerRead(Direction.FETCHED, device, app, "ai-kv-drop", 0, outcome))

    def _kv_channel(self, device: str) -> tuple[str, grpc.aio.Channel]:
        """A channel to a device that keeps a state of this device's: whatever its level now (the
        state is this device's own, asked back or dropped)."""
        try:
            named, channel, _ = self._channels.get(device)
        except (LookupError, DeviceNotFound) as exc:
            raise Unavailable(f"{exc}: its KV state cannot be reached") from None
        return f"device {named.name} ({device})", channel

    def _kv_error(
        self, exc: grpc.aio.AioRpcError, device: str, channel: grpc.aio.Channel, who: str
    ) -> AicapError:
        if exc.code() in _LOST:
            self._channels.drop(device, channel)
            self._loads.pop(device, None)
        return _error(exc, who)

    async def close(self) -> None:
        await self._channels.close()


def _kv_timeout(size: int) -> float:
    return KV_TIMEOUT_S + size / 1e6


def _error(exc: grpc.aio.AioRpcError, who: str) -> AicapError:
    """A failed peer call as aicap's error: Unavailable when the device cannot be reached or was lost
    (aicap replays the generation elsewhere), else the device's own status, naming it."""
    code, details = exc.code(), exc.details() or exc.code().name
    if code in _LOST or code == grpc.StatusCode.UNAUTHENTICATED:
        return Unavailable(f"{who} was lost: {details}")
    cls = BY_CODE.get(code.name, Unavailable)
    return cls(f"{who}: {details}")
