"""The FastAPI application: lifespan wiring and routers. `app = create_app()` for uvicorn."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from app.batching import MicroBatcher
from app.config import Settings
from app.dependencies import Services
from app.error_handlers import install_error_handlers
from app.inference import InferenceService, ModelOutput
from app.model_format import ModelLoadError
from app.models import ModelRegistry, load_model, resolve_version_dir
from app.routes import health, kserve, model, page, predict, tfserving
from app.uploads import BodySizeLimit

logger = logging.getLogger(__name__)

PROTOCOL_PATHS = (tfserving.PREFIX, "/v2/models/")

# Python's default is 700; fewer young collections measured faster (see the README).
YOUNG_GC_THRESHOLD = 20_000


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to the largest batch, so each size class has been run once."""
    sizes = [1]
    while sizes[-1] < max_batch_size:
        sizes.append(min(sizes[-1] * 2, max_batch_size))
    return sizes


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Services]]:
        try:
            version_dir = resolve_version_dir(settings.model_dir, settings.model_version)
            served = load_model(version_dir, settings)
        except ModelLoadError as error:
            logger.critical("Cannot start: %s", error)
            raise
        served.warm_up(warm_up_sizes(settings.max_batch_size))
        registry = ModelRegistry(settings.model_dir, served)
        batcher: MicroBatcher[np.ndarray, ModelOutput] = MicroBatcher(
            registry.predict_batch,
            max_batch_size=settings.max_batch_size,
            batch_timeout_ms=settings.batch_timeout_ms,
            max_queue_size=settings.max_queue_size,
        )
        with ThreadPoolExecutor(settings.preprocess_threads, "preprocess") as preprocess_pool:
            async with batcher:
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
                services = Services(settings, inference, ready=True)
                logger.info(
                    "Serving %s version %d from %s with %s",
                    served.name,
                    served.version,
                    version_dir,
                    served.runtime.value,
                )
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
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, limit_for=body_limit)
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(tfserving.router)
    app.include_router(kserve.router)
    app.include_router(page.router)
    app.mount(page.STATIC_PATH, StaticFiles(directory=page.STATIC_DIR), name="static")
    return app
