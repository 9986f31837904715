"""Prometheus metrics over the loaded engines, named as vLLM's and llama.cpp server's are.

A custom collector reads each engine's stats snapshot and latency histograms at scrape time, so
nothing is counted twice and the engines need no Prometheus code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from aicap.engine.async_embedder import AsyncEmbedder
from aicap.engine.async_engine import AsyncEngine, LatencyHistogram
from aicap.limits import AppLimiter

Engines = Callable[[], list[tuple[str, AsyncEngine]]]
Embedders = Callable[[], list[tuple[str, AsyncEmbedder]]]
Metric = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


def _buckets(h: LatencyHistogram) -> list[tuple[str, float]]:
    return [
        *((repr(float(b)), float(c)) for b, c in zip(h.bounds, h.cumulative(), strict=True)),
        ("+Inf", float(h.count)),
    ]


class AicapCollector(Collector):
    def __init__(self, engines: Engines, limiter: AppLimiter, embedders: Embedders | None = None) -> None:
        self._engines = engines
        self._limiter = limiter
        self._embedders = embedders

    def collect(self) -> Iterator[Metric]:
        yield from _engine_metrics(self._engines())
        if self._embedders is not None:
            yield from _embedder_metrics(self._embedders())
        queued = GaugeMetricFamily(
            "aicap_app_requests_queued", "Requests waiting for one of their app's slots (all apps)."
        )
        queued.add_metric([], self._limiter.waiting)
        yield queued
        rejected = CounterMetricFamily(
            "aicap_requests_rejected", "Requests refused with RESOURCE_EXHAUSTED, by limit.", labels=["limit"]
        )
        for limit in ("max_queued_per_app", "max_waiting"):
            rejected.add_metric([limit], self._limiter.rejected[limit])
        yield rejected


# per model, one value each: (kind, name after "aicap_", help, EngineStats field)
_SERIES = (
    ("gauge", "kv_cache_usage_perc", "KV cache usage: used blocks over all blocks (0-1).", "kv_usage"),
    ("gauge", "kv_cache_waste_perc", "Cells of used KV blocks not holding a token (0-1).", "kv_waste"),
    ("gauge", "kv_cache_blocks_total", "KV blocks of the context.", "kv_blocks_total"),
    ("gauge", "kv_cache_blocks_used", "KV blocks in use.", "kv_blocks_used"),
    ("gauge", "kv_cache_blocks_held", "KV blocks held for sessions and pinned contexts.", "kv_blocks_held"),
    ("counter", "kv_cache_holds_dropped", "Session and pinned holds dropped for room.", "holds_dropped"),
    ("counter", "prefix_cache_queries", "Prompt tokens looked up in the cache.", "prefix_cache_queries"),
    ("counter", "prefix_cache_hits", "Prompt tokens found in the prefix cache.", "prefix_cache_hits"),
    ("gauge", "prefix_cache_unused_tokens", "Tokens cached, unused now.", "prefix_cache_unused_tokens"),
    ("gauge", "prefix_cache_target_tokens", "Unused cached tokens kept now.", "prefix_cache_target_tokens"),
    ("counter", "remote_kv_failures", "Remote swaps that failed (recomputed).", "remote_kv_failures"),
    ("gauge", "num_requests_waiting", "Sequences waiting for admission.", "requests_waiting"),
    ("gauge", "num_requests_running", "Sequences running.", "requests_running"),
    ("gauge", "num_requests_swapped", "Sequences swapped out to host memory.", "requests_swapped"),
    ("gauge", "prefill_tokens_per_second", "Prompt tokens a second, recently.", "prefill_tokens_per_s"),
    ("gauge", "decode_step_seconds", "One sequence's decode step, recently.", "decode_step_s"),
    ("counter", "prompt_tokens", "Prompt tokens received.", "prompt_tokens_total"),
    ("counter", "generation_tokens", "Tokens generated.", "generation_tokens_total"),
    ("counter", "request_success", "Samples finished.", "requests_finished"),
    ("counter", "spec_decode_num_draft_tokens", "Tokens drafted (speculation).", "spec_draft_tokens"),
    ("counter", "spec_decode_num_accepted_tokens", "Drafted tokens accepted.", "spec_accepted_tokens"),
)  # fmt: skip
# per model and a second label: (name, help, label, {label value: EngineStats field})
_LABELLED = (
    (
        "aicap_num_preemptions",
        "Sequences preempted, by kind (swap: to host memory; remote: to a paired device's; recompute).",
        "kind",
        {"swap": "preemptions_swap", "recompute": "preemptions_recompute", "remote": "preemptions_remote"},
    ),
    (
        "aicap_remote_kv_bytes",
        "Bytes of swapped-out KV state sent to paired devices and received back.",
        "direction",
        {"sent": "remote_kv_bytes_sent", "received": "remote_kv_bytes_received"},
    ),
)


def _engine_metrics(engines: list[tuple[str, AsyncEngine]]) -> Iterator[Metric]:
    """Each loaded engine's figures, labelled by model."""
    stats = [(name, engine, engine.stats()) for name, engine in engines]
    kinds = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}
    for kind, metric, doc, attr in _SERIES:
        family = kinds[kind](f"aicap_{metric}", doc, labels=["model"])
        for name, _, s in stats:
            family.add_metric([name], getattr(s, attr))
        yield family
    for metric, doc, label, fields in _LABELLED:
        counter = CounterMetricFamily(metric, doc, labels=["model", label])
        for name, _, s in stats:
            for value, attr in fields.items():
                counter.add_metric([name, value], getattr(s, attr))
        yield counter
    for metric, doc, which in (
        ("aicap_time_to_first_token_seconds", "Time to first token (seconds).", "ttft"),
        ("aicap_inter_token_latency_seconds", "Time between consecutive tokens (seconds).", "itl"),
    ):
        hist = HistogramMetricFamily(metric, doc, labels=["model"])
        for name, engine, _ in stats:
            h = getattr(engine, which)
            hist.add_metric([name], _buckets(h), h.sum)
        yield hist


def _embedder_metrics(embedders: list[tuple[str, AsyncEmbedder]]) -> Iterator[Metric]:
    """Each loaded embedding model's counters, labelled by model."""
    stats = [(name, e.stats()) for name, e in embedders]
    for kind, metric, doc, attr in (
        ("counter", "embedding_texts", "Texts embedded.", "texts"),
        ("counter", "embedding_tokens", "Tokens of the texts embedded.", "tokens"),
        ("counter", "embedding_batches", "Embedding batches run (one llama_encode each).", "batches"),
        ("gauge", "embedding_texts_waiting", "Texts waiting to be embedded.", "texts_waiting"),
    ):
        family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
            f"aicap_{metric}", doc, labels=["model"]
        )
        for name, s in stats:
            family.add_metric([name], getattr(s, attr))
        yield family


def make_registry(
    engines: Engines, limiter: AppLimiter, embedders: Embedders | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AicapCollector(engines, limiter, embedders))
    return registry


def prometheus_text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
