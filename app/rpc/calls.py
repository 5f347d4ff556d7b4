"""What every gRPC call goes through, as every HTTP request goes through the middlewares: a
request id, readiness, admission control for inference, the service's errors as gRPC status
codes, metrics by protocol and method, and the access line."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from app import metrics
from app.dependencies import Services, checked_ready
from app.errors import (
    InferenceTimeoutError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    RequestTimeoutError,
    ServiceError,
    UnimplementedError,
)
from app.observability import VALID_REQUEST_ID, access_logger, model_version, request_id

logger = logging.getLogger(__name__)

Result = TypeVar("Result")
Context: TypeAlias = grpc.aio.ServicerContext

# TensorFlow Serving's and KServe's protocol names in `/metrics` and the access log.
TFSERVING = "grpc-tfserving"
KSERVE = "grpc-kserve"


def status_code(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status that says what the HTTP status says."""
    if isinstance(error, InferenceTimeoutError | RequestTimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, OverloadedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, NotReadyError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, ModelNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, UnimplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    if 400 <= error.status_code < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class Calls:
    """Runs one servicer method's work inside everything a call needs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count()
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    async def run(
        self,
        context: Context,
        protocol: str,
        method: str,
        work: Callable[[], Awaitable[Result]],
        *,
        inference: bool = False,
        ready: bool = True,
    ) -> Result:
        """`inference`: takes an admission slot; `ready`: refused (UNAVAILABLE) until the
        model is ready."""
        started = time.perf_counter()
        rid = self._request_id(context)
        id_token, version_token = request_id.set(rid), model_version.set(None)
        admission = self.services.admission if inference else None
        admitted = False
        code = grpc.StatusCode.OK
        try:
            if ready:
                checked_ready(self.services)
            if admission is not None:
                if not (admission.enter_now() or await admission.enter_within_budget()):
                    raise OverloadedError(
                        admission.refusal_message, retry_after_s=admission.retry_after_s
                    )
                admitted = True
            return await work()
        except ServiceError as error:
            code = status_code(error)
            trailers = self._trailers(rid)
            if "Retry-After" in error.headers:
                # gRPC's own retry hint for a client with a retry policy.
                retry_ms = int(error.headers["Retry-After"]) * 1000
                trailers.append(("grpc-retry-pushback-ms", str(retry_ms)))
            context.set_trailing_metadata(trailers)
            await context.abort(code, error.message)
            raise  # Not reached: abort raises.
        except asyncio.CancelledError:
            remaining = context.time_remaining()
            timed_out = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            if code is grpc.StatusCode.OK:  # Not the abort above.
                code = grpc.StatusCode.INTERNAL
                logger.exception("Unexpected error in %s", method)
                context.set_trailing_metadata(self._trailers(rid))
                await context.abort(code, "Internal error.")
            raise
        finally:
            if admitted and admission is not None:
                admission.leave()
            if code is grpc.StatusCode.OK:
                context.set_trailing_metadata(self._trailers(rid))
            self._record(method, protocol, code, time.perf_counter() - started)
            model_version.reset(version_token)
            request_id.reset(id_token)

    def _request_id(self, context: Context) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str):
                if VALID_REQUEST_ID.fullmatch(value):
                    return value
                break
        return f"{self._id_prefix}-g{next(self._ids):x}"

    @staticmethod
    def _trailers(rid: str) -> list[tuple[str, str]]:
        trailers = [("x-request-id", rid)]
        version = model_version.get()
        if version is not None:
            trailers.append(("x-model-version", str(version)))
        return trailers

    def _record(self, method: str, protocol: str, code: grpc.StatusCode, elapsed: float) -> None:
        key = (method, protocol, code.name)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.REQUESTS.labels(*key)
        counter.inc()
        histogram = self._histograms.get(key[:2])
        if histogram is None:
            histogram = self._histograms[key[:2]] = metrics.REQUEST_SECONDS.labels(*key[:2])
        histogram.observe(elapsed)
        if self.services.settings.access_log:
            version = model_version.get()
            access_logger.info(
                "gRPC %s %s %.1f ms",
                method,
                code.name,
                elapsed * 1000,
                extra={
                    "method": "gRPC",
                    "route": method,
                    "status": code.name,
                    "duration_ms": round(elapsed * 1000, 2),
                    "model_version": version if version is not None else "",
                },
            )
