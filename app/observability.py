"""What every request leaves behind: a request id, its metrics, and (when asked for) an access
line; and how logs are written, as text or as one JSON object per line.

One ASGI middleware does it all, so a request pays for one wrapper, not four.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
# What nginx logs for a client that closed its connection before the answer; never sent.
CLIENT_CLOSED_REQUEST = 499
# A client's own id is used when it is short and plain; anything else is replaced.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_PROTOCOLS = (("/v1/", "tfserving"), ("/v2", "kserve"), ("/predict", "cnn-serve"))

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The model version that answered the current request, for its X-Model-Version header.
model_version: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "model_version", default=None
)
access_logger = logging.getLogger("app.access")


def protocol_of(path: str) -> str:
    for prefix, protocol in _PROTOCOLS:
        if path.startswith(prefix):
            return protocol
    return "other"


class Traffic:
    """Shared by the middleware and the lifespan: requests in flight (sampled into the metrics),
    and whether SIGTERM came (clients are then told not to reuse their connections, and the
    `on_drain` callbacks run on the event loop: the gRPC health service turns NOT_SERVING)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self.on_drain: list[Callable[[], object]] = []


class Observability:
    """Request ids, request metrics, security headers, the access log, and `Connection: close`
    while draining.

    It runs for every request, so it stays lean: headers are appended as raw pairs, request ids
    come from a counter behind a random per-process prefix, labelled metric children are looked
    up once, and the in-flight count is a plain integer the metrics sample."""

    def __init__(self, app: ASGIApp, *, access_log: bool, traffic: Traffic) -> None:
        self.app = app
        self.access_log = access_log
        self.traffic = traffic
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count()
        self._request_counters: dict[tuple[str, str, int], Any] = {}
        self._latency_histograms: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        if given is None or not VALID_REQUEST_ID.fullmatch(given):
            given = f"{self._id_prefix}-{next(self._ids):x}"
        rid = given
        token = request_id.set(rid)
        version_token = model_version.set(None)
        status = 500
        timing = b""

        async def send_observed(message: Message) -> None:
            nonlocal status, timing
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: a response may be sent more than once (the prebuilt refusals).
                headers = [*message.get("headers", ()), *_SECURITY_HEADERS]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
                version = model_version.get()
                if version is not None:
                    headers.append((b"x-model-version", str(version).encode()))
                if self.traffic.draining:
                    headers.append((b"connection", b"close"))
                if self.access_log:
                    timing = next((v for k, v in headers if k == b"server-timing"), b"")
            await send(message)

        self.traffic.in_flight += 1
        try:
            await self.app(scope, receive, send_observed)
        except ClientDisconnect:
            # Gone before its body arrived: nobody to answer, and nothing went wrong here.
            status = CLIENT_CLOSED_REQUEST
        finally:
            self.traffic.in_flight -= 1
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            protocol = protocol_of(scope["path"])
            self._count(route, protocol, status, elapsed)
            if self.access_log:
                version = model_version.get()
                access_logger.info(
                    "%s %s %d %.1f ms",
                    scope["method"],
                    route,
                    status,
                    elapsed * 1000,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "server_timing": timing.decode("latin-1"),
                        "model_version": version if version is not None else "",
                    },
                )
            model_version.reset(version_token)
            request_id.reset(token)

    def _count(self, route: str, protocol: str, status: int, elapsed: float) -> None:
        counter_key = (route, protocol, status)
        counter = self._request_counters.get(counter_key)
        if counter is None:
            counter = metrics.REQUESTS.labels(route, protocol, str(status))
            self._request_counters[counter_key] = counter
        counter.inc()
        histogram_key = (route, protocol)
        histogram = self._latency_histograms.get(histogram_key)
        if histogram is None:
            histogram = metrics.REQUEST_SECONDS.labels(route, protocol)
            self._latency_histograms[histogram_key] = histogram
        histogram.observe(elapsed)


# Responses are JSON, images and the page: none is to be sniffed as something else.
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_of(scope: Scope) -> str:
    """The matched route's template (`/v1/models/{model_name}:predict`), never the raw path: a
    label per client-chosen path would grow without end."""
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if isinstance(path_format, str):
        return path_format
    return "unmatched"


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any extras."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message",
        "asctime",
        "request_id",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry |= {key: value for key, value in vars(record).items() if key not in self._STANDARD}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
