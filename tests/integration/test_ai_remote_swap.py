"""Remote swap (Infinite-LLM, issue 12.3b) with two real daemons on loopback: alpha offloads and has a
tiny KV cache and no local swap budget, so its long generations preempt each other and the preempted
sequences' KV goes to bravo's memory (bravo serves alpha) and comes back; both sides count it (alpha's
engine stats, bravo's audit log). When bravo is killed with states kept there, those sequences are
recomputed and every stream still completes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from harness import Daemon
from test_pairing import _owner, _pair
from test_sync_daemons import _start

from aicap import AiClient, EngineStats
from datamgr.device.identity import load_identity
from datamgr.device.peer_channel import open_peer_channel
from datamgr.sync.v1 import ai_peer_pb2 as pb
from datamgr.sync.v1 import ai_peer_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(300)]

USE_AI = "ohos.permission.USE_AI"
APP = "com.example.notes"
# one decode thread each (two OpenMP teams of two on 2 cores wait at every barrier for each other)
AI = {"DATAMGR_AI__ENABLED": "true", "DATAMGR_AI__N_THREADS": "1"}
# 256 KV cells (32 blocks) for 4 generations of ~140 tokens: they preempt each other, and with no
# local swap budget every preempted sequence's KV goes to bravo
TIGHT = {
    "DATAMGR_AI__OFFLOAD": "true",
    "DATAMGR_AI__N_CTX": "256",
    "DATAMGR_AI__MAX_RUNNING": "4",
    "DATAMGR_AI__SWAP_BUDGET_TOKENS": "0",
}
N, MAX_TOKENS = 4, 120


@dataclass
class Pair:
    alpha: Daemon
    bravo: Daemon
    alpha_id: str
    app: AiClient
    admin: AiClient


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("ai-swap")
    a = _start(tmp, "alpha", 4, **AI, **TIGHT)
    b = _start(tmp, "bravo", 4, **AI, DATAMGR_AI__SERVE_PEERS="paired")
    try:
        _pair(a, b)
        for d in (a, b):
            d.wait_healthy(120, service="aicap.v1.AiService")
        with _owner(a) as owner:
            alpha_id = owner.identity().device_id
        admin = (a.data_dir / "admin.token").read_text().strip()
        found = Pair(
            a,
            b,
            alpha_id,
            AiClient.connect(a.address, a.add_app(APP, USE_AI)),
            AiClient.connect(a.address, admin),
        )
        yield found
        found.app.close()
        found.admin.close()
    finally:
        for d in (a, b):  # both stopped before either is judged: none left running
            if d.proc is not None:
                d.stop()
        for d in (a, b):
            assert "Traceback" not in d.log(), d.log()[-3000:]


def _stats(p: Pair) -> EngineStats:
    return p.admin.stats().engines[0]


def _generate(p: Pair, i: int) -> tuple[int, str | None, str]:
    # split: decoded here whatever AUTO would choose (a request that keeps its prompt here, LOCAL,
    # would never have its KV leave either)
    out = p.app.complete(
        f"{i}: Tell me a long story about the sea, the ships and the sailors.",
        max_tokens=MAX_TOKENS,
        temperature=0,
        ignore_eos=True,
        placement="split",
    )
    s = out.samples[0]
    assert s.usage is not None
    return len(s.tokens), s.finish_reason, s.usage.device


def _kv_audit(bravo: Daemon, alpha_id: str) -> dict[tuple[str, str], int]:
    """Bravo's audit entries of alpha's KV state, counted by (key, outcome)."""
    counts: dict[tuple[str, str], int] = {}
    with _owner(bravo) as owner:
        for r in owner.peer_reads(alpha_id, 10_000):
            if r.key.startswith("ai-kv-"):
                counts[(r.key, r.outcome)] = counts.get((r.key, r.outcome), 0) + 1
    return counts


def test_preempted_sequences_are_kept_on_the_paired_device_and_come_back(pair: Pair) -> None:
    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(lambda i: _generate(pair, i), range(N)))
    assert results == [(MAX_TOKENS, "length", pair.alpha_id)] * N
    s = _stats(pair)
    assert s.preemptions_remote > 0, s
    assert s.remote_kv_bytes_sent > 0 and s.remote_kv_bytes_received > 0
    # bravo kept them and gave each back or forgot it when told: nothing left there
    deadline = time.monotonic() + 10
    while True:
        audit = _kv_audit(pair.bravo, pair.alpha_id)
        kept = audit.get(("ai-kv-keep", "OK"), 0)
        settled = audit.get(("ai-kv-return", "OK"), 0) + audit.get(("ai-kv-drop", "OK"), 0)
        if (kept and settled == kept) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert kept >= 1 and audit.get(("ai-kv-return", "OK"), 0) >= 1, audit
    assert settled == kept, audit


def test_the_keeping_device_gives_a_state_back_once_and_only_to_its_device(pair: Pair) -> None:
    """KeepKv, ReturnKv and DropKv called as alpha (with its certificate) at bravo's peer port."""
    with _owner(pair.bravo) as owner:
        address = f"127.0.0.1:{owner.identity().peer_port}"
    bravo_cert = (pair.bravo.data_dir / "device" / "cert.pem").read_bytes()
    chunks = [b"head", b"x" * 100_000, b"tail"]

    async def calls() -> None:
        async with open_peer_channel(address, load_identity(pair.alpha.data_dir), bravo_cert) as ch:
            stub = pb_grpc.AiPeerServiceStub(ch)
            free = (await stub.GetLoad(pb.GetLoadRequest(), timeout=10)).kv_keep_free
            assert free == 256 * 1024 * 1024  # ai.peer_swap_bytes: nothing kept for alpha now
            kept = await stub.KeepKv(iter([pb.KvChunk(data=c) for c in chunks]), timeout=10)
            assert len(kept.handle) >= 24
            load = await stub.GetLoad(pb.GetLoadRequest(), timeout=10)
            assert load.kv_keep_free < free - 100_000
            back = [m.data async for m in stub.ReturnKv(pb.ReturnKvRequest(handle=kept.handle), timeout=10)]
            assert back == chunks
            for call in (
                lambda: _drain(stub.ReturnKv(pb.ReturnKvRequest(handle=kept.handle), timeout=10)),
                lambda: stub.DropKv(pb.DropKvRequest(handle=kept.handle), timeout=10),
                lambda: stub.DropKv(pb.DropKvRequest(handle="not-a-handle"), timeout=10),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call()
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert (await stub.GetLoad(pb.GetLoadRequest(), timeout=10)).kv_keep_free == free

    asyncio.run(calls())


async def _drain(call: object) -> list[object]:
    return [m async for m in call]  # type: ignore[attr-defined]


def test_a_keeper_killed_with_states_on_it_means_recompute_and_every_stream_completes(pair: Pair) -> None:
    """Last: bravo is killed."""
    before = _stats(pair)
    with ThreadPoolExecutor(N) as pool:
        futures = [pool.submit(_generate, pair, 10 + i) for i in range(N)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until some state is on bravo (sent, not back yet)
            s = _stats(pair)
            away = (s.remote_kv_bytes_sent - before.remote_kv_bytes_sent) - (
                s.remote_kv_bytes_received - before.remote_kv_bytes_received
            )
            if away > 0 or all(f.done() for f in futures):
                break
            time.sleep(0.02)
        assert away > 0, "no state was kept on bravo"
        pair.bravo.kill9()
        results = [f.result(timeout=120) for f in futures]
    assert results == [(MAX_TOKENS, "length", pair.alpha_id)] * N
    after = _stats(pair)
    assert after.remote_kv_failures > before.remote_kv_failures, after
