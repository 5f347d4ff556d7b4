"""Liveness, readiness and the served model's metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.dependencies import ReadyServicesDep
from app.models import available_versions
from app.schemas import ErrorResponse, Liveness, ModelInfo, Readiness

router = APIRouter(tags=["health"])
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "The model is not loaded and warm yet."}
}


@router.get("/health/live", response_model=Liveness, summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses=NOT_READY,
    summary="The model is loaded and warmed up",
)
async def ready(services: ReadyServicesDep) -> dict[str, Any]:
    model = services.inference.registry.current
    return {"status": "ready", "model": {"name": model.name, "version": model.version}}


@router.get(
    "/model",
    response_model=ModelInfo,
    responses=NOT_READY,
    tags=["model"],
    summary="Metadata of the model being served",
)
async def model_info(services: ReadyServicesDep) -> dict[str, Any]:
    model = services.inference.registry.current
    settings = services.settings
    return {
        **model.metadata,
        "name": model.name,
        "version": model.version,
        "versions_available": available_versions(model.path.parent),
        "labels": list(model.labels),
        "preprocessing": model.profile.value,
        "runtime": model.runtime.value,
        "batching": {
            "max_batch_size": settings.max_batch_size,
            "batch_timeout_ms": settings.batch_timeout_ms,
            "max_queue_size": settings.max_queue_size,
        },
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_batch_upload_bytes": settings.max_batch_upload_bytes,
            "max_batch_files": settings.max_batch_files,
            "max_image_pixels": settings.max_image_pixels,
        },
    }
