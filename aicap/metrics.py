"""Prometheus metrics over the loaded engines, named as vLLM's and llama.cpp server's are.

A custom collector reads each engine's stats snapshot and latency histograms at scrape time, so
nothing is counted twice and the engines need no Prometheus code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from aicap.engine.async_engine import AsyncEngine, LatencyHistogram
from aicap.limits import AppLimiter

Engines = Callable[[], list[tuple[str, AsyncEngine]]]
Metric = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


def _buckets(h: LatencyHistogram) -> list[tuple[str, float]]:
    return [
        *((repr(float(b)), float(c)) for b, c in zip(h.bounds, h.cumulative(), strict=True)),
        ("+Inf", float(h.count)),
    ]


class AicapCollector(Collector):
    def __init__(self, engines: Engines, limiter: AppLimiter) -> None:
        self._engines = engines
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        yield from _engine_metrics(self._engines())
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


def _engine_metrics(engines: list[tuple[str, AsyncEngine]]) -> Iterator[Metric]:
    """Each loaded engine's figures, labelled by model."""
    m = ["model"]

    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=m)

    def counter(name: str, doc: str, labels: list[str] = m) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=labels)

    usage = gauge("aicap_kv_cache_usage_perc", "KV cache usage: used blocks over all blocks (0-1).")
    waste = gauge("aicap_kv_cache_waste_perc", "Cells of used KV blocks not holding a token (0-1).")
    blocks_total = gauge("aicap_kv_cache_blocks_total", "KV blocks of the context.")
    blocks_used = gauge("aicap_kv_cache_blocks_used", "KV blocks in use.")
    queries = counter("aicap_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
    hits = counter("aicap_prefix_cache_hits", "Prompt tokens found in the prefix cache.")
    preempt = counter(
        "aicap_num_preemptions",
        "Sequences preempted, by kind (swap: to host memory; remote: to a paired device's; recompute).",
        ["model", "kind"],
    )
    remote_bytes = counter(
        "aicap_remote_kv_bytes",
        "Bytes of swapped-out KV state sent to paired devices and received back.",
        ["model", "direction"],
    )
    remote_failures = counter(
        "aicap_remote_kv_failures", "Remote swaps (puts and gets) that failed: recomputed."
    )
    waiting = gauge("aicap_num_requests_waiting", "Sequences waiting for admission.")
    running = gauge("aicap_num_requests_running", "Sequences running.")
    swapped = gauge("aicap_num_requests_swapped", "Sequences swapped out to host memory.")
    prefill_speed = gauge("aicap_prefill_tokens_per_second", "Prompt tokens per second, from recent steps.")
    step_time = gauge("aicap_decode_step_seconds", "One sequence's decode step here, from recent steps.")
    prompt = counter("aicap_prompt_tokens", "Prompt tokens received.")
    generated = counter("aicap_generation_tokens", "Tokens generated.")
    finished = counter("aicap_request_success", "Samples finished.")
    ttft = HistogramMetricFamily(
        "aicap_time_to_first_token_seconds", "Time to first token (seconds).", labels=m
    )
    itl = HistogramMetricFamily(
        "aicap_inter_token_latency_seconds", "Time between consecutive tokens (seconds).", labels=m
    )
    for name, engine in engines:
        s = engine.stats()
        usage.add_metric([name], s.kv_usage)
        waste.add_metric([name], s.kv_waste)
        blocks_total.add_metric([name], s.kv_blocks_total)
        blocks_used.add_metric([name], s.kv_blocks_used)
        queries.add_metric([name], s.prefix_cache_queries)
        hits.add_metric([name], s.prefix_cache_hits)
        preempt.add_metric([name, "swap"], s.preemptions_swap)
        preempt.add_metric([name, "recompute"], s.preemptions_recompute)
        preempt.add_metric([name, "remote"], s.preemptions_remote)
        remote_bytes.add_metric([name, "sent"], s.remote_kv_bytes_sent)
        remote_bytes.add_metric([name, "received"], s.remote_kv_bytes_received)
        remote_failures.add_metric([name], s.remote_kv_failures)
        waiting.add_metric([name], s.requests_waiting)
        running.add_metric([name], s.requests_running)
        swapped.add_metric([name], s.requests_swapped)
        prefill_speed.add_metric([name], s.prefill_tokens_per_s)
        step_time.add_metric([name], s.decode_step_s)
        prompt.add_metric([name], s.prompt_tokens_total)
        generated.add_metric([name], s.generation_tokens_total)
        finished.add_metric([name], s.requests_finished)
        ttft.add_metric([name], _buckets(engine.ttft), engine.ttft.sum)
        itl.add_metric([name], _buckets(engine.itl), engine.itl.sum)
    yield from (
        usage,
        waste,
        blocks_total,
        blocks_used,
        queries,
        hits,
        preempt,
        remote_bytes,
        remote_failures,
        waiting,
        running,
        swapped,
        prefill_speed,
        step_time,
    )
    yield from (prompt, generated, finished, ttft, itl)
    yield from _speculation_metrics(engines)


def _speculation_metrics(engines: list[tuple[str, AsyncEngine]]) -> Iterator[Metric]:
    """Speculation's drafted and accepted tokens per model (vLLM's names)."""
    drafted = CounterMetricFamily(
        "aicap_spec_decode_num_draft_tokens", "Tokens drafted (n-gram speculation).", labels=["model"]
    )
    accepted = CounterMetricFamily(
        "aicap_spec_decode_num_accepted_tokens", "Drafted tokens accepted.", labels=["model"]
    )
    for name, engine in engines:
        s = engine.stats()
        drafted.add_metric([name], s.spec_draft_tokens)
        accepted.add_metric([name], s.spec_accepted_tokens)
    yield from (drafted, accepted)


def make_registry(engines: Engines, limiter: AppLimiter) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AicapCollector(engines, limiter))
    return registry


def prometheus_text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
