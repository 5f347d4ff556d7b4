"""`GET /model`: what is being served, how, and within which limits."""

from __future__ import annotations

from fastapi import APIRouter

from app.dependencies import ReadyServicesDep
from app.routes.openapi import error_responses
from app.schemas import BatchingInfo, ModelInfo

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfo,
    responses=error_responses(503),
    summary="Metadata of the model being served",
)
async def model_info(services: ReadyServicesDep) -> ModelInfo:
    registry, settings = services.inference.registry, services.settings
    model = registry.current
    return ModelInfo(
        **{
            **model.metadata,
            "name": model.name,
            "version": model.version,
            "versions_available": registry.versions_on_disk(),
            "versions_served": sorted(registry.served),
            "version_labels": registry.labels,
            "version_status": {
                str(number): {"state": status.state.value, "error_message": status.error_message}
                for number, status in sorted(registry.statuses.items())
            },
            "labels": list(model.labels),
            "preprocessing": model.profile.value,
            "runtime": model.runtime.value,
            "runtime_reason": model.runtime_reason,
            "batching": BatchingInfo(
                max_batch_size=settings.max_batch_size,
                batch_timeout_ms=settings.batch_timeout_ms,
                max_queue_size=settings.max_queue_size,
            ),
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_batch_upload_bytes": settings.max_batch_upload_bytes,
                "max_batch_files": settings.max_batch_files,
                "max_image_pixels": settings.max_image_pixels,
            },
        }
    )
