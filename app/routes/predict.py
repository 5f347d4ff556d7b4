"""`POST /predict` and `POST /predict/batch`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.dependencies import ready_services
from app.error_handlers import error_detail
from app.errors import ServiceError
from app.inference import Classified
from app.routes.direct import DirectRoute
from app.routes.openapi import error_responses
from app.schemas import BatchItem, BatchResponse, ModelRef, Prediction
from app.uploads import read_image, read_images

PREDICT_PATH = "/predict"
PREDICT_BATCH_PATH = "/predict/batch"

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


def prediction(classified: Classified) -> Prediction:
    labels, probabilities = classified.model.labels, classified.probabilities
    best = int(probabilities.argmax())
    return Prediction(
        label=labels[best],
        confidence=float(probabilities[best]),
        probabilities=dict(zip(labels, probabilities.tolist(), strict=True)),
        model=ModelRef(name=classified.model.name, version=classified.model.version),
    )


def server_timing(classified: Classified) -> str:
    return (
        f"decode;dur={classified.decode_s * 1000:.2f}, queue;dur={classified.queue_s * 1000:.2f}, "
        f"inference;dur={classified.inference_s * 1000:.2f}"
    )


def json_response(
    body: Prediction | BatchResponse, headers: dict[str, str] | None = None
) -> Response:
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


@router.post(
    PREDICT_PATH,
    response_model=Prediction,
    responses=error_responses(400, 413, 415, 422, 503),
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
    return json_response(prediction(classified), {"Server-Timing": server_timing(classified)})


@router.post(
    PREDICT_BATCH_PATH,
    response_model=BatchResponse,
    responses=error_responses(400, 413, 415, 422, 503),
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
            results.append(BatchItem(filename=filename, error=error_detail(outcome)))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(BatchItem(filename=filename, prediction=prediction(outcome)))
    return json_response(BatchResponse(results=results))
