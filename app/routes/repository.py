"""Triton's model repository extension (KServe v2), which `tritonclient` calls:

    POST /v2/repository/index                    every version seen, and its state
    POST /v2/repository/models/{name}/load       rescan now and serve what the policy wants
    POST /v2/repository/models/{name}/unload     stop serving the model until the next load

These act on the worker process that receives them. With several workers, publish versions on
disk (they are polled) or send SIGHUP, which makes uvicorn restart every worker.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from app.dependencies import ready_services
from app.errors import InvalidArgumentError, ModelNotFoundError
from app.protocols import repository_index
from app.routes.direct import DirectRoute
from app.routes.openapi import path_parameters, protocol_error_responses

router = APIRouter(tags=["KServe v2 / Open Inference Protocol"], route_class=DirectRoute)


async def index(request: Request) -> Response:
    registry = ready_services(request).inference.registry
    return JSONResponse(repository_index(registry))


def _model_name(request: Request) -> str:
    services = ready_services(request)
    name = str(request.path_params["model_name"])
    if name != services.inference.registry.name:
        raise ModelNotFoundError(f"failed to load '{name}', no version is available")
    return name


async def load(request: Request) -> Response:
    services = ready_services(request)
    name = _model_name(request)
    await services.reloader.load()
    if not services.inference.registry.served:
        problems = "; ".join(
            f"version {number}: {status.error_message}"
            for number, status in services.inference.registry.statuses.items()
            if status.error_message
        )
        raise InvalidArgumentError(f"failed to load '{name}': {problems or 'no version found'}")
    return Response(status_code=200)


async def unload(request: Request) -> Response:
    services = ready_services(request)
    _model_name(request)
    await services.reloader.unload()
    return Response(status_code=200)


router.add_api_route(
    "/v2/repository/index",
    index,
    methods=["POST"],
    summary="Repository index: every version seen and its state",
    responses=protocol_error_responses(503),
)
for _action, _endpoint, _summary in (
    ("load", load, "Rescan and serve the versions the policy wants"),
    ("unload", unload, "Stop serving the model (this worker) until the next load"),
):
    _path = f"/v2/repository/models/{{model_name}}/{_action}"
    router.add_api_route(
        _path,
        _endpoint,
        methods=["POST"],
        summary=_summary,
        openapi_extra=path_parameters(_path),
        responses=protocol_error_responses(400, 404, 503),
    )
