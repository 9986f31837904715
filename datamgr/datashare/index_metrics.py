"""The indexer's figures for Prometheus: the backlog of rows waiting to be indexed, per table, and the
vectors held in memory, per column. Read at scrape time from what the indexer last counted (no
database work on the scraping thread)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from datamgr.datashare.indexer import Indexer


class IndexCollector(Collector):
    def __init__(self, indexer: Indexer) -> None:
        self._indexer = indexer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ix = self._indexer
        pending = GaugeMetricFamily(
            "datamgr_datashare_index_pending",
            "Rows of an indexed DataShare table whose indexes have not caught up with their last write "
            "(not embedded yet, or on SQLite not in the full-text index yet): the indexer's backlog.",
            labels=["uri"],
        )
        for uri, count in sorted(dict(ix.pending).items()):
            pending.add_metric([uri], count)
        yield pending
        vectors = GaugeMetricFamily(
            "datamgr_datashare_index_vectors",
            "Vectors of an indexed column held in memory for search, by table (ds_N) and column.",
            labels=["table", "column"],
        )
        for (table, col), size in sorted(ix.sizes().items()):
            vectors.add_metric([table, col], size)
        yield vectors
        embedded = CounterMetricFamily(
            "datamgr_datashare_index_embedded", "Rows embedded and stored by the indexer since start."
        )
        embedded.add_metric([], ix.embedded)
        yield embedded
        failures = CounterMetricFamily(
            "datamgr_datashare_index_embed_failures", "Embedding calls of the indexer that failed."
        )
        failures.add_metric([], ix.failures)
        yield failures
