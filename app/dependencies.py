"""What the lifespan creates, handed to routes through one typed dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.admission import Admission
from app.config import Settings
from app.errors import NotReadyError
from app.inference import InferenceService
from app.observability import Traffic
from app.reloader import Reloader


@dataclass
class Services:
    settings: Settings
    inference: InferenceService
    reloader: Reloader
    # Whether SIGTERM came: readiness then says 503 so load balancers stop sending, while the
    # requests that still arrive are served.
    traffic: Traffic
    # Admission control's slots, shared by HTTP and gRPC (None when it is turned off).
    admission: Admission | None = None
    ready: bool = False


def ready_services(request: Request) -> Services:
    """The services once the model is warm; routes that take the Request call it directly."""
    return checked_ready(getattr(request.state, "services", None))


def checked_ready(services: Services | None) -> Services:
    if services is None:
        raise NotReadyError("The model is not loaded yet.")
    if not services.ready:
        raise NotReadyError("The model is not ready yet.")
    return services


def accepting_traffic(request: Request) -> Services:
    """For readiness checks: ready, and not shutting down."""
    services = ready_services(request)
    if services.traffic.draining:
        raise NotReadyError("The service is shutting down.")
    return services


# Async on purpose: FastAPI runs plain `def` dependencies in its thread pool, a hop per request.
async def get_ready_services(request: Request) -> Services:
    return ready_services(request)


async def get_accepting_traffic(request: Request) -> Services:
    return accepting_traffic(request)


ReadyServicesDep = Annotated[Services, Depends(get_ready_services)]
AcceptingTrafficDep = Annotated[Services, Depends(get_accepting_traffic)]
