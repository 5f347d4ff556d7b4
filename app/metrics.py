"""Prometheus metrics, counted in every worker process and scraped as one.

With several uvicorn workers, prometheus-client's multiprocess mode keeps each process's values
in files under PROMETHEUS_MULTIPROC_DIR, and a scrape of any worker adds them up. `python -m app`
empties that directory before the workers start; the variable must be set before
prometheus_client is first imported, which is why nothing of `app` imported by `__main__`
imports this module. Without the variable (tests, one process) the default registry is used.

Names and units follow Prometheus' conventions; TensorFlow Serving's and Triton's metric sets
are what the choice of signals follows (request counts and latencies by model, batch sizes,
queue waits, load outcomes).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.config import METRICS_DIR_VARIABLE

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = tuple(float(2**power) for power in range(11))  # 1, 2, 4 ... 1024

REQUESTS = Counter(
    "cnn_serve_requests_total", "HTTP requests answered.", ["route", "protocol", "status"]
)
REQUEST_SECONDS = Histogram(
    "cnn_serve_request_duration_seconds",
    "Time from the request reaching the app to the end of its response.",
    ["route", "protocol"],
    buckets=LATENCY_BUCKETS_S,
)
DECODE_SECONDS = Histogram(
    "cnn_serve_decode_seconds", "Decoding and preprocessing one request's images.",
    buckets=LATENCY_BUCKETS_S,
)  # fmt: skip
QUEUE_SECONDS = Histogram(
    "cnn_serve_queue_wait_seconds", "An image's wait in the batcher's queue.",
    buckets=LATENCY_BUCKETS_S,
)  # fmt: skip
INFERENCE_SECONDS = Histogram(
    "cnn_serve_inference_seconds", "One model call (a whole batch).", buckets=LATENCY_BUCKETS_S
)
BATCH_SIZE = Histogram("cnn_serve_batch_size", "Images per model call.", buckets=BATCH_SIZE_BUCKETS)
QUEUE_DEPTH = Gauge(
    "cnn_serve_queue_depth", "Images waiting for the model.", multiprocess_mode="livesum"
)
IN_FLIGHT = Gauge(
    "cnn_serve_requests_in_flight", "Requests being handled.", multiprocess_mode="livesum"
)
MODEL_INFO = Gauge(
    "cnn_serve_model_info",
    "1 for every model version being served, with what runs it.",
    ["name", "version", "runtime"],
    multiprocess_mode="livemax",
)
RELOADS = Counter("cnn_serve_model_reloads_total", "Attempts to load a model version.", ["result"])
REJECTED = Counter(
    "cnn_serve_rejected_requests_total",
    "Requests refused, by error code (invalid images, limits, timeouts, overload).",
    ["code"],
)
PREDICTIONS = Counter(
    "cnn_serve_predictions_total", "Predictions, by the label predicted.", ["label"]
)
CONFIDENCE = Histogram(
    "cnn_serve_prediction_confidence",
    "The top class's probability: a shift downwards is a sign of drift.",
    buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0),
)
NOT_ONE_DIGIT = Counter(
    "cnn_serve_not_one_digit_total",
    "Inputs the detector said are not one digit, by reason (not_a_digit, several_digits).",
    ["reason"],
)
INVERTED = Counter("cnn_serve_inverted_uploads_total", "Uploads of dark ink on a light background.")


@functools.cache
def predictions_of(label: str) -> Any:
    """The predictions counter of one label (a labelled child costs a lookup to find)."""
    return PREDICTIONS.labels(label)


@functools.cache
def not_one_digit(reason: str) -> Any:
    return NOT_ONE_DIGIT.labels(reason)


def scrape() -> tuple[bytes, str]:
    """The exposition of every worker's values (or this process's, without multiprocess mode)."""
    if os.environ.get(METRICS_DIR_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
