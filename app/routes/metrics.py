"""`GET /metrics`: Prometheus' text format, every worker's values together."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app import metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def scrape() -> Response:
    body, content_type = metrics.scrape()
    return Response(body, media_type=content_type)
