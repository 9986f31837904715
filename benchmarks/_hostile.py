"""The misbehaving app of tenants_bench: each attack runs in a process of its own until told to stop and
reports how its calls ended, by gRPC status code ("ok" for accepted).

Attacks (issue 10): `subscribers` (DataShare and KV change streams that are never read), `flood` (1 MiB
DATA_HUB records, 1 MiB KV values and ~800 KB DataShare rows as fast as the daemon takes them), `predicates`
(Deletes and queries with long `like` patterns over ~800 KB rows), `prompts` (500,000-character prompts to
Complete) and `preauth` (large messages with a token the daemon does not know, to a DataShare method and to
the health check that is open to anyone).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ATTACKS = ("subscribers", "flood", "predicates", "prompts", "preauth")
HOSTILE = "com.bench.hostile"
NOTES_URI = f"datashare:///{HOSTILE}/main/notes"  # the predicate attack's table
BLOBS_URI = f"datashare:///{HOSTILE}/main/blobs"  # the flooded table the idle subscribers watch
KV_STORE = "flood"
MANIFEST = {
    "bundle": HOSTILE,
    "stores": [
        {
            "name": "main",
            "tables": [
                {
                    "name": name,
                    "primary_key": "id",
                    "columns": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}],
                }
                for name in ("notes", "blobs")
            ],
        }
    ],
}
BUG_CODES = ("INTERNAL", "UNKNOWN")
MiB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """How hard the hostile app pushes (picklable: it crosses into the attack processes)."""

    address: str
    token: str
    flood_cap_bytes: int  # accepted bytes per flood kind after which the bench stops (no quota refused it)
    row_chars: int = 800_000
    pattern_chars: int = 1000
    ds_subscribers: int = 16
    kv_subscribers: int = 8
    prompt_chars: int = 500_000
    prompt_threads: int = 4
    preauth_bytes: int = 64 * MiB
    preauth_threads: int = 4
    nice: int = 10


def code_of(exc: BaseException) -> str:
    """The gRPC status name an SDK error (or a raw grpc.RpcError) carries."""
    code: Any = getattr(exc, "code", None)
    if callable(code):
        code = code()
    name = getattr(code, "name", code)
    return name if isinstance(name, str) and name else type(exc).__name__


class Tally:
    """Outcome counts per kind of call, from several threads."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self.bytes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(self, kind: str, fn: Callable[[], object], size: int = 0) -> bool:
        """Runs one call; True if it was accepted."""
        try:
            fn()
            outcome = "ok"
        except Exception as exc:  # every way a call can end is an outcome to count
            outcome = code_of(exc)
        with self._lock:
            self.counts.setdefault(kind, Counter())[outcome] += 1
            if outcome == "ok":
                self.bytes[kind] += size
        return outcome == "ok"


def _loop(
    stop: threading.Event, tally: Tally, kind: str, fn: Callable[[], object], size: int, cap: int
) -> None:
    """Repeats a call until stopped or until `cap` bytes were accepted (0: no cap)."""
    while not stop.is_set() and not (cap and tally.bytes[kind] >= cap):
        tally.call(kind, fn, size)


def _subscribers(plan: Plan, stop: threading.Event, ready: Any, tally: Tally) -> None:
    from datamgr.client import DataShareHelper, KvStoreClient, SecurityLevel

    held: list[tuple[str, Any]] = []
    with (
        DataShareHelper.connect(plan.address, plan.token) as h,
        KvStoreClient.connect(plan.address, plan.token) as kv,
    ):
        store = kv.get_kv_store(KV_STORE, security_level=SecurityLevel.S1)
        for _ in range(plan.kv_subscribers):
            tally.call("KV subscription, never read", lambda: held.append(("KV", store.on_data_change())))
        for _ in range(plan.ds_subscribers):
            tally.call(
                "DataShare subscription, never read",
                lambda: held.append(("DataShare", h.subscribe(BLOBS_URI))),
            )
        ready.set()
        stop.wait()
        _endings(held, tally)


def _endings(held: list[tuple[str, Any]], tally: Tally, wait_s: float = 5.0) -> None:
    """Reads each subscription at last, to count how the daemon ended it ("open": it had not)."""
    ended: dict[int, str] = {}

    def drain(i: int, sub: Any) -> None:
        try:
            for _ in sub:
                pass
            ended[i] = "ended"
        except Exception as exc:  # the daemon's verdict on a subscriber that never read
            ended[i] = code_of(exc)

    threads = [threading.Thread(target=drain, args=(i, sub), daemon=True) for i, (_, sub) in enumerate(held)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + wait_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for i, (svc, sub) in enumerate(held):
        outcome = ended.get(i, "open")
        with tally._lock:
            tally.counts.setdefault(f"{svc} subscription, at the end", Counter())[outcome] += 1
        sub.close()


def _flood(plan: Plan, stop: threading.Event, ready: Any, tally: Tally) -> None:
    from datamgr.client import DataShareHelper, KvStoreClient, SecurityLevel
    from udmf import Intention, UdmfClient, UnifiedData, UnifiedRecord

    payload = os.urandom(MiB)
    data = UnifiedData(UnifiedRecord("general.octet-stream", payload))
    row = {"body": "x" * plan.row_chars}
    keys = iter(range(1 << 62))
    with (
        UdmfClient.connect(plan.address, token=plan.token) as udmf,
        KvStoreClient.connect(plan.address, plan.token) as kv,
        DataShareHelper.connect(plan.address, plan.token) as h,
    ):
        store = kv.get_kv_store(KV_STORE, security_level=SecurityLevel.S1)
        calls = [
            ("UDMF DATA_HUB insert, 1 MiB", lambda: udmf.insert_data(data, Intention.DATA_HUB), MiB),
            ("KV put, 1 MiB", lambda: store.put(f"k{next(keys)}", payload), MiB),
            (
                f"DataShare insert, {plan.row_chars // 1000} KB row",
                lambda: h.insert(BLOBS_URI, row),
                plan.row_chars,
            ),
        ]
        ready.set()
        _threads(
            stop, [(_loop, (stop, tally, kind, fn, size, plan.flood_cap_bytes)) for kind, fn, size in calls]
        )


def _predicates(plan: Plan, stop: threading.Event, ready: Any, tally: Tally) -> None:
    from datamgr.client import DataShareHelper, DataSharePredicates

    # matches nothing; costs rows x text x pattern; pattern_chars long in all (the longest allowed)
    pattern = "%" + "a" * max(1, plan.pattern_chars - 2) + "b"
    preds = DataSharePredicates().like("body", pattern).or_().like("body", pattern[:-1] + "c")

    def query() -> None:
        with h.query(NOTES_URI, preds) as rs:
            rs.row_count  # noqa: B018 - reads the whole result

    with DataShareHelper.connect(plan.address, plan.token) as h:
        for _ in range(4):
            tally.call(
                "DataShare insert, setup row", lambda: h.insert(NOTES_URI, {"body": "a" * plan.row_chars})
            )
        ready.set()
        _threads(
            stop,
            [
                (
                    _loop,
                    (
                        stop,
                        tally,
                        f"DataShare delete, 2 x like {plan.pattern_chars}",
                        lambda: h.delete(NOTES_URI, preds),
                        0,
                        0,
                    ),
                ),
                (_loop, (stop, tally, f"DataShare query, 2 x like {plan.pattern_chars}", query, 0, 0)),
            ],
        )


def _prompts(plan: Plan, stop: threading.Event, ready: Any, tally: Tally) -> None:
    from aicap import AiClient

    sentence = "The quick brown fox jumps over the lazy dog while the river runs to the sea. "
    prompt = (sentence * (plan.prompt_chars // len(sentence) + 1))[: plan.prompt_chars]
    kind = f"AI complete, {plan.prompt_chars:,}-character prompt"
    with AiClient.connect(plan.address, plan.token) as ai:
        ready.set()
        call = lambda: ai.complete(prompt, max_tokens=1, temperature=0.0)  # noqa: E731
        _threads(stop, [(_loop, (stop, tally, kind, call, 0, 0))] * plan.prompt_threads)


def _preauth(plan: Plan, stop: threading.Event, ready: Any, tally: Tally) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from datamgr.client import DataShareHelper

    mib = plan.preauth_bytes // MiB
    bogus = (("authorization", "Bearer not-a-token"),)
    with (
        DataShareHelper.connect(plan.address, "not-a-token") as h,
        grpc.insecure_channel(plan.address, options=[("grpc.max_send_message_length", -1)]) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        ready.set()

        def insert() -> None:  # a method that needs a known token
            h.insert(BLOBS_URI, {"body": b"\0" * plan.preauth_bytes})

        def check() -> None:  # a method open to anyone
            health.Check(health_pb2.HealthCheckRequest(service="a" * plan.preauth_bytes), metadata=bogus)

        half = max(1, plan.preauth_threads // 2)
        _threads(
            stop,
            [(_loop, (stop, tally, f"DataShare insert, unknown token, {mib} MiB", insert, 0, 0))] * half
            + [(_loop, (stop, tally, f"Health check, unknown token, {mib} MiB", check, 0, 0))]
            * max(1, plan.preauth_threads - half),
        )


def _threads(stop: threading.Event, targets: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    """Runs the loops until `stop`; a loop stuck in a call the daemon never ends is left behind."""
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in targets]
    for t in threads:
        t.start()
    stop.wait()
    deadline = time.monotonic() + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


RUNNERS = {
    "subscribers": _subscribers,
    "flood": _flood,
    "predicates": _predicates,
    "prompts": _prompts,
    "preauth": _preauth,
}


def run(attack: str, plan: Plan, stop: Any, ready: Any, results: Any) -> None:
    """Process entry: runs one attack until `stop` is set, then puts (attack, counts, bytes, error)."""
    with contextlib.suppress(OSError):
        os.nice(plan.nice)  # the app's own CPU is the OS scheduler's business, not the daemon's
    tally, error = Tally(), ""
    local_stop = threading.Event()
    parent = os.getppid()

    def watch() -> None:  # stop when told, or when the bench itself is gone
        while not stop.wait(1.0) and os.getppid() == parent:
            pass
        local_stop.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        RUNNERS[attack](plan, local_stop, ready, tally)
    except Exception as exc:  # reported beside the counts, the bench goes on
        error = f"{type(exc).__name__} ({code_of(exc)}): {exc}"
        ready.set()
    results.put((attack, {k: dict(v) for k, v in tally.counts.items()}, dict(tally.bytes), error))
    results.close()
    results.join_thread()
    os._exit(0)  # threads still blocked in calls the daemon never answers must not hold the exit
