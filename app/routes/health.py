"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from app.dependencies import AcceptingTrafficDep
from app.routes.openapi import error_responses
from app.schemas import Liveness, ModelRef, Readiness

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Liveness, summary="The process is up")
async def live() -> Liveness:
    return Liveness(status="alive")


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses=error_responses(503),
    summary="The model is loaded and warmed up, and the service is not shutting down",
)
async def ready(services: AcceptingTrafficDep) -> Readiness:
    model = services.inference.registry.current
    return Readiness(status="ready", model=ModelRef(name=model.name, version=model.version))
