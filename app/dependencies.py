"""What the lifespan creates, handed to routes through one typed dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.errors import NotReadyError
from app.inference import InferenceService
from app.reloader import Reloader


@dataclass
class Services:
    settings: Settings
    inference: InferenceService
    reloader: Reloader
    ready: bool = False


def ready_services(request: Request) -> Services:
    """The services once the model is warm; routes that take the Request call it directly."""
    services: Services | None = getattr(request.state, "services", None)
    if services is None:
        raise NotReadyError("The model is not loaded yet.")
    if not services.ready:
        raise NotReadyError("The model is not ready yet.")
    return services


# Async on purpose: FastAPI runs plain `def` dependencies in its thread pool, a hop per request.
async def get_ready_services(request: Request) -> Services:
    return ready_services(request)


ReadyServicesDep = Annotated[Services, Depends(get_ready_services)]
