"""`POST /predict` and `POST /predict/batch`."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.dependencies import ready_services
from app.error_handlers import error_body
from app.errors import ServiceError
from app.routes.direct import DirectRoute
from app.schemas import BatchResponse, ErrorResponse, Prediction
from app.uploads import read_image, read_images

router = APIRouter(tags=["predict"], route_class=DirectRoute)

_IMAGE_BODY = {"type": "string", "format": "binary"}
SINGLE_UPLOAD = {
    "requestBody": {
        "required": True,
        "description": "The image as a multipart field named `file`, or as the raw body.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": _IMAGE_BODY},
                },
            },
            "image/*": {"schema": _IMAGE_BODY},
            "application/octet-stream": {"schema": _IMAGE_BODY},
        },
    }
}
BATCH_UPLOAD = {
    "requestBody": {
        "required": True,
        "description": "One multipart field named `files` per image.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": _IMAGE_BODY}},
                },
            }
        },
    }
}


def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    descriptions = {
        400: "Not a decodable image, or a blank one.",
        413: "The upload, or the image's pixel count, is over the limit.",
        415: "Unsupported Content-Type.",
        422: "A required field is missing.",
        503: "Not ready, or overloaded (see Retry-After).",
    }
    return {
        status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses
    }


@router.post(
    "/predict",
    response_model=Prediction,
    responses=_errors(400, 413, 415, 422, 503),
    openapi_extra=SINGLE_UPLOAD,
    summary="Classify one image",
    description="PNG, JPEG, GIF, BMP, WebP or TIFF; photos and canvas drawings are turned into "
    "the 28x28 grayscale input the model was trained on. The `Server-Timing` header tells how "
    "long decoding, queueing and inference took.",
)
async def predict(request: Request) -> Response:
    services = ready_services(request)
    data, _ = await read_image(request)
    classified = await services.inference.classify(data)
    return Response(
        orjson.dumps(classified.as_dict()),
        media_type="application/json",
        headers={"Server-Timing": classified.server_timing()},
    )


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=_errors(413, 415, 422, 503),
    openapi_extra=BATCH_UPLOAD,
    summary="Classify several images",
    description="Results come back in upload order; a file that cannot be classified gets an "
    "`error` object instead of a `prediction`, and the others are still classified.",
)
async def predict_batch(request: Request) -> Response:
    services = ready_services(request)
    uploads = await read_images(request, services.settings.max_batch_files)
    outcomes = await asyncio.gather(
        *(services.inference.classify(data) for data, _ in uploads), return_exceptions=True
    )
    results = []
    for (_, filename), outcome in zip(uploads, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            results.append({"filename": filename, "prediction": None, "error": error_body(outcome)})
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append({"filename": filename, "prediction": outcome.as_dict(), "error": None})
    return Response(orjson.dumps({"results": results}), media_type="application/json")
