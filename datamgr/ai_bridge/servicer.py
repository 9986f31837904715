"""AiPeerService: this device's model for paired devices' apps, if its owner lets it (`ai.serve_peers`).

The peer server's interceptor has already checked that the caller is a paired device; this servicer
checks that the owner serves it, applies its per-device limits (`limits.DeviceLimits`) and runs the
generation with `AiService.serve_peer`. The app the device names is logged and counted, never believed:
the device's own limits are what bound it. Every generation served is in the audit log of
cross-device reads (key `ai:<model digest>`, bytes: the tokens sent back, 4 each).

It also keeps paired devices' swapped-out KV states in memory (`kept_kv.KeptKv`, within
`ai.peer_swap_bytes` per device) for the devices it serves, and gives each back only to the device
that kept it; each keep, return and drop is audited (keys `ai-kv-keep`, `ai-kv-return`, `ai-kv-drop`).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from aicap.service import AiService
from aicap.v1 import aicap_pb2
from datamgr.ai_bridge.kept_kv import KeptKv
from datamgr.ai_bridge.limits import DeviceLimits
from datamgr.config import AiSettings
from datamgr.device.peer_reads import Direction, PeerRead, PeerReadLog
from datamgr.device.peer_server import calling_device
from datamgr.device.trust import TrustedDevice, TrustStore
from datamgr.errors import InvalidArgument, PermissionDenied, Unavailable
from datamgr.sync.v1 import ai_peer_pb2 as pb
from datamgr.sync.v1 import ai_peer_pb2_grpc as pb_grpc

log = logging.getLogger("datamgr.ai_bridge")
_FINISH = {"stop": aicap_pb2.FINISH_REASON_STOP, "length": aicap_pb2.FINISH_REASON_LENGTH}


class RecentRate:
    """Tokens a second over about the last `window_s`, from a running total read now and then (at
    each GetLoad: no timer, nothing when nobody asks)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window = window_s
        self._seen: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, total: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        seen = self._seen
        seen.append((now, total))
        while len(seen) > 2 and now - seen[1][0] >= self._window:
            seen.popleft()  # keep one reading at least a window old, as the base
        t0, n0 = seen[0]
        return (total - n0) / (now - t0) if now > t0 else 0.0


def serves(setting: str | list[str], device_id: str) -> bool:
    """Whether `ai.serve_peers` lets this device run generations for the (paired) device."""
    if isinstance(setting, list):
        return device_id in setting
    return setting == "paired"


class AiPeerServicer(pb_grpc.AiPeerServiceServicer):
    def __init__(self, ai: AiService, trust: TrustStore, settings: AiSettings, audit: PeerReadLog) -> None:
        self._ai, self._trust, self._settings, self._audit = ai, trust, settings, audit
        self.limits = DeviceLimits(settings.peer_max_concurrent, settings.peer_tokens_per_minute)
        self.kept = KeptKv(settings.peer_swap_bytes, settings.peer_swap_ttl_s)
        self._rate = RecentRate()

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AiPeerServiceServicer_to_server(self, server)

    def _caller(self, context: Any) -> TrustedDevice:
        caller = calling_device(context, self._trust)
        if caller is None:  # the interceptor refuses these first; unpaired between the two checks
            raise PermissionDenied("the calling device is not paired with this one")
        return caller

    def _served(self, context: Any, what: str) -> TrustedDevice:
        """The calling device, if the owner lets this device run its `what`."""
        caller = self._caller(context)
        if not serves(self._settings.serve_peers, caller.device_id):
            raise PermissionDenied(
                f"this device does not run {what} for device {caller.name} (ai.serve_peers)"
            )
        return caller

    def _still_served(self, caller: TrustedDevice) -> None:
        """Raises PermissionDenied once the owner unpaired the device or stopped serving it."""
        if self._trust.by_fingerprint(caller.fingerprint) is None:
            raise PermissionDenied(f"device {caller.name} is no longer paired with this device")
        if not serves(self._settings.serve_peers, caller.device_id):
            raise PermissionDenied(f"this device no longer runs generations for device {caller.name}")

    def _note(self, caller: TrustedDevice, request: Any, kind: str, sent: int, outcome: str) -> None:
        key = f"{kind}:{request.model_digest[:16]}"
        self._audit.note(PeerRead(Direction.SERVED, caller.device_id, request.app, key, sent, outcome))

    async def Generate(self, request: pb.PeerGenerateRequest, context: Any) -> AsyncIterator[pb.PeerTokens]:
        caller = self._served(context, "generations")
        sent, outcome = 0, "CANCELLED"
        try:
            with self.limits.admit(caller.device_id, caller.name, len(request.tokens)):
                tokens = list(request.tokens)
                events = self._ai.serve_peer(
                    caller.device_id,
                    request.app,
                    request.model_digest,
                    tokens,
                    request.params,
                    request.skip_draws,
                    request.replayed,
                )
                async for ev in events:
                    self._still_served(caller)  # unpaired or no longer served: not one token more
                    if ev.state is not None:  # draining: its last event, the KV state to hand back
                        for data in ev.state.to_chunks():
                            sent += len(data) // 4  # the audit counts 4 bytes a unit
                            yield pb.PeerTokens(kv_state=data)
                        continue
                    self.limits.charge(caller.device_id, 1)
                    sent += 1
                    token = pb.PeerToken(index=ev.index, token=ev.token, cached_tokens=ev.cached_tokens)
                    if ev.logprob is not None:
                        token.logprob = ev.logprob
                    if ev.finished:
                        token.finish_reason = _FINISH[ev.finish_reason or "length"]
                    yield pb.PeerTokens(tokens=[token])
            outcome = "OK"
        except Exception as exc:
            outcome = getattr(exc, "code", None) or "INTERNAL"
            raise
        finally:
            self._note(caller, request, "ai", 4 * sent, outcome)

    async def Prefill(self, request: pb.PeerPrefillRequest, context: Any) -> AsyncIterator[pb.KvChunk]:
        caller = self._served(context, "prefills")
        sent, outcome = 0, "CANCELLED"
        try:
            with self.limits.admit(caller.device_id, caller.name, len(request.tokens)):
                state = await self._ai.prefill_for_peer(
                    caller.device_id, request.app, request.model_digest, list(request.tokens)
                )
            for data in state.to_chunks():
                sent += len(data)
                yield pb.KvChunk(data=data)
            outcome = "OK"
        except Exception as exc:
            outcome = getattr(exc, "code", None) or "INTERNAL"
            raise
        finally:
            self._note(caller, request, "ai-prefill", sent, outcome)

    async def GetLoad(self, request: pb.GetLoadRequest, context: Any) -> pb.PeerLoad:
        caller = self._caller(context)
        out = pb.PeerLoad(
            serves=serves(self._settings.serve_peers, caller.device_id) and not self._ai.draining,
            peer_running=self.limits.running(caller.device_id),
            peer_max_concurrent=self.limits.max_concurrent,
        )
        models = self._ai.models
        for m in models.all():
            out.models.add(name=m.name, digest=m.digest, n_ctx=m.spec.n_ctx, loaded=m.engine is not None)
        default = models.get("")
        load = self._ai.load(default)
        out.requests_waiting, out.requests_running = load.waiting, load.running
        out.max_running, out.tokens_waiting = load.max_running, load.tokens_waiting
        out.prefill_tokens_per_s, out.decode_step_s = load.prefill_tokens_per_s, load.decode_step_s
        out.cache_type = load.cache_type
        if default.engine is not None:
            s = default.engine.stats()
            out.kv_free = 1.0 - s.kv_usage
            out.recent_tokens_per_s = self._rate.observe(s.generation_tokens_total)
        self.kept.sweep()
        out.kv_keep_free = self.kept.free(caller.device_id) if out.serves else 0
        return out

    # ---- swapped-out KV kept for paired devices ----

    def _kv_note(self, caller: TrustedDevice, kind: str, size: int, outcome: str) -> None:
        self._audit.note(PeerRead(Direction.SERVED, caller.device_id, "", kind, size, outcome))

    async def KeepKv(self, request_iterator: AsyncIterator[pb.KvChunk], context: Any) -> pb.KeepKvResponse:
        caller = self._served(context, "KV swaps")
        received, outcome = 0, "CANCELLED"
        try:
            if self._ai.draining:
                raise Unavailable("this device is draining: it keeps no KV state for paired devices now")
            with self.kept.intake(caller.device_id, caller.name) as intake:
                async for chunk in request_iterator:
                    intake.add(chunk.data)
                    received += len(chunk.data)
                if not intake.chunks:
                    raise InvalidArgument("no KV state was sent")
                handle = intake.commit()
            outcome = "OK"
            return pb.KeepKvResponse(handle=handle)
        except Exception as exc:
            outcome = getattr(exc, "code", None) or "INTERNAL"
            raise
        finally:
            self._kv_note(caller, "ai-kv-keep", received, outcome)

    async def ReturnKv(self, request: pb.ReturnKvRequest, context: Any) -> AsyncIterator[pb.KvChunk]:
        caller = self._caller(context)  # its own state: given back even once it is no longer served
        sent, outcome = 0, "CANCELLED"
        try:
            for data in self.kept.take(caller.device_id, request.handle):
                sent += len(data)
                yield pb.KvChunk(data=data)
            outcome = "OK"
        except Exception as exc:
            outcome = getattr(exc, "code", None) or "INTERNAL"
            raise
        finally:
            self._kv_note(caller, "ai-kv-return", sent, outcome)

    async def DropKv(self, request: pb.DropKvRequest, context: Any) -> pb.DropKvResponse:
        caller = self._caller(context)
        outcome = "INTERNAL"
        try:
            self.kept.drop(caller.device_id, request.handle)
            outcome = "OK"
        except Exception as exc:
            outcome = getattr(exc, "code", None) or "INTERNAL"
            raise
        finally:
            self._kv_note(caller, "ai-kv-drop", 0, outcome)
        return pb.DropKvResponse()
