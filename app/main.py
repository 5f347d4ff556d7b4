"""The FastAPI application: lifespan wiring and routers. `app = create_app()` for uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app import metrics
from app.admission import Admission, AdmissionControl
from app.batching import MicroBatcher
from app.config import Settings
from app.dependencies import Services
from app.error_handlers import install_error_handlers
from app.inference import InferenceService, ModelOutput
from app.model_format import ModelLoadError
from app.models import ModelRegistry, Work
from app.observability import Observability, Traffic
from app.protocols import SERVER_VERSION
from app.reloader import Reloader
from app.routes import health, kserve, model, page, predict, repository, tfserving
from app.routes import metrics as metrics_route
from app.rpc.server import grpc_serving
from app.uploads import BodyLimits

logger = logging.getLogger(__name__)

PROTOCOL_PATHS = (tfserving.PREFIX, "/v2/models/")

# Python's default is 700; fewer young collections measured faster (see the README).
YOUNG_GC_THRESHOLD = 20_000
# A lone image whose model call costs less than this is classified on the event loop: the hop to
# the model thread and back costs more (int8 weights and the non-digit detector: ~0.14 ms a call
# as the server times it; the hop, ~0.1 ms of a lone request's latency). Only a lone image on an
# idle worker is run here, so nothing waits behind it; every batch of several goes to the thread.
INLINE_INFERENCE_MAX_MS = 0.25


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to the largest batch, so each size class has been run once."""
    sizes = [1]
    while sizes[-1] < max_batch_size:
        sizes.append(min(sizes[-1] * 2, max_batch_size))
    return sizes


@asynccontextmanager
async def _polling(reloader: Reloader, interval_s: float) -> AsyncIterator[None]:
    """The reloader's polling (unless the interval is 0), and a rescan on SIGHUP."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    if interval_s > 0:
        tasks.add(loop.create_task(reloader.poll(), name="model-poll"))
    with contextlib.suppress(NotImplementedError, RuntimeError):  # Not on every platform.
        loop.add_signal_handler(
            signal.SIGHUP, lambda: tasks.add(loop.create_task(reloader.sync(settled_only=False)))
        )
    try:
        yield
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def _sampling_in_flight(traffic: Traffic, every_s: float = 1.0) -> Iterator[None]:
    """The in-flight gauge, set from a plain count once a second (not twice per request)."""

    async def sample() -> None:
        while True:
            metrics.IN_FLIGHT.set(traffic.in_flight)
            await asyncio.sleep(every_s)

    task = asyncio.get_running_loop().create_task(sample(), name="in-flight-gauge")
    try:
        yield
    finally:
        task.cancel()


def _record_batch(size: int, seconds: float, queue_left: int) -> None:
    metrics.BATCH_SIZE.observe(size)
    metrics.INFERENCE_SECONDS.observe(seconds)
    metrics.QUEUE_DEPTH.set(queue_left)


@contextlib.contextmanager
def _draining_on_sigterm(traffic: Traffic, grace_s: float) -> Iterator[None]:
    """On SIGTERM: readiness 503 at once and every response `Connection: close`; then, after
    `grace_s` (a load balancer's time to notice), uvicorn's own shutdown: no new connections,
    in-flight requests finished within CNN_SERVE_SHUTDOWN_TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    try:
        uvicorn_handler = signal.getsignal(signal.SIGTERM)
    except ValueError:  # Not the main thread (an in-process test client): nothing to do.
        uvicorn_handler = None
    if not callable(uvicorn_handler):
        yield
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        traffic.draining = True
        for listener in traffic.on_drain:
            loop.call_soon_threadsafe(listener)
        logger.info("SIGTERM: not ready; shutting down in %g s", grace_s)
        loop.call_soon_threadsafe(loop.call_later, grace_s, uvicorn_handler, signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, uvicorn_handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    traffic = Traffic()
    budget_s = settings.overload_budget_ms / 1000
    admission = Admission(budget_s) if budget_s else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Services]]:
        registry = ModelRegistry(settings.model_name, settings.model_dir)
        sizes = warm_up_sizes(settings.max_batch_size)
        reloader = Reloader(registry, settings, warm_up=lambda model: model.warm_up(sizes))
        try:
            await reloader.start()
        except ModelLoadError as error:
            logger.critical("Cannot start: %s", error)
            raise
        batcher: MicroBatcher[Work, ModelOutput] = MicroBatcher(
            registry.predict_batch,
            max_batch_size=settings.max_batch_size,
            batch_timeout_ms=settings.batch_timeout_ms,
            max_queue_size=settings.max_queue_size,
            inline_max_ms=INLINE_INFERENCE_MAX_MS,
            # Answered in place, requests are never in flight together, and admission control
            # would not see a flood: while the loop runs behind, they queue.
            may_run_inline=lambda: admission is None or admission.keeping_up,
            on_batch=_record_batch,
        )
        with ThreadPoolExecutor(settings.preprocess_threads, "preprocess") as preprocess_pool:
            async with batcher, _polling(reloader, settings.model_poll_interval_s):
                inference = InferenceService(
                    registry,
                    batcher,
                    preprocess_pool,
                    max_image_pixels=settings.max_image_pixels,
                    request_timeout_s=settings.request_timeout_s,
                )
                # What start-up leaves is long-lived: keep full collections from walking it. A
                # request allocates a few hundred short-lived objects that reference counting
                # frees, so frequent young collections are mostly wasted work.
                gc.freeze()
                gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
                services = Services(
                    settings, inference, reloader, traffic, admission=admission, ready=True
                )
                with (
                    _draining_on_sigterm(traffic, settings.shutdown_grace_s),
                    _sampling_in_flight(traffic),
                ):
                    async with grpc_serving(services):
                        yield {"services": services}
                        services.ready = False

    def body_limit(path: str) -> int:
        # Several images per request: the batch endpoint and both inference protocols.
        if path == predict.PREDICT_BATCH_PATH or path.startswith(PROTOCOL_PATHS):
            return settings.max_batch_upload_bytes
        return settings.max_upload_bytes

    app = FastAPI(
        title="cnn-serve",
        summary="A small image classifier behind a fast, hardened HTTP API.",
        version=SERVER_VERSION,
        lifespan=lifespan,
    )

    def is_inference(scope: Scope) -> bool:
        path: str = scope["path"]
        return scope["method"] == "POST" and path.startswith(
            (predict.PREDICT_PATH, *PROTOCOL_PATHS)
        )

    if admission is not None:
        app.add_middleware(AdmissionControl, admission=admission, applies_to=is_inference)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Server-Timing", "Retry-After", "Inference-Header-Content-Length"],
        )
    app.add_middleware(
        BodyLimits,
        limit_for=body_limit,
        timeout_s=settings.body_timeout_s,
        idle_timeout_s=settings.body_idle_timeout_s,
    )
    # Outermost: it sees every answer, including the middlewares' own refusals.
    app.add_middleware(Observability, access_log=settings.access_log, traffic=traffic)
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(tfserving.router)
    app.include_router(kserve.router)
    app.include_router(repository.router)
    app.include_router(metrics_route.router)
    app.include_router(page.router)
    app.mount(page.STATIC_PATH, StaticFiles(directory=page.STATIC_DIR), name="static")
    return app
