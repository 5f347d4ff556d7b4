"""What the service's own /metrics said about a benchmark cell: scraped before and after it, so
the counts and histograms of the cell alone can be set beside what wrk measured."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class SeenByMetrics:
    requests: float
    mean_batch_size: float
    # Upper bounds of the histogram buckets the percentiles fall in.
    p50_at_most_ms: float
    p99_at_most_ms: float

    def describe(self) -> str:
        return (
            f"/metrics: {self.requests:,.0f} requests, mean batch {self.mean_batch_size:.1f}, "
            f"p50 <= {self.p50_at_most_ms:g} ms, p99 <= {self.p99_at_most_ms:g} ms"
        )


def seen_between(before: Samples, after: Samples) -> SeenByMetrics:
    """The inference requests (any protocol) and batches between two scrapes."""

    def delta(name: str, le: str | None = None) -> float:
        total = 0.0
        for key, value in after.items():
            labels = dict(key[1])
            if key[0] != name or labels.get("protocol") == "other":
                continue
            if le is None or labels.get("le") == le:
                total += value - before.get(key, 0.0)
        return total

    duration = "cnn_serve_request_duration_seconds"
    requests = delta(f"{duration}_count")
    bounds = {dict(labels)["le"] for name, labels in after if name == f"{duration}_bucket"}
    buckets = sorted((float(le), delta(f"{duration}_bucket", le)) for le in bounds)

    def at_most_ms(quantile: float) -> float:
        return next(le for le, count in buckets if count >= quantile * requests) * 1000

    batches = delta("cnn_serve_batch_size_count")
    return SeenByMetrics(
        requests=requests,
        mean_batch_size=delta("cnn_serve_batch_size_sum") / batches if batches else 0.0,
        p50_at_most_ms=at_most_ms(0.5),
        p99_at_most_ms=at_most_ms(0.99),
    )
