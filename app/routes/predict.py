"""`POST /predict` and `POST /predict/batch`."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
from fastapi import APIRouter, Request
from PIL import Image
from starlette.responses import Response

from app.dependencies import ready_services
from app.detector import Reason
from app.error_handlers import error_detail
from app.errors import InvalidRequestError, NotOneDigitError, ServiceError
from app.inference import Classified
from app.preprocess import Preprocessed
from app.routes.direct import DirectRoute
from app.routes.openapi import error_responses
from app.schemas import BatchItem, BatchResponse, CropBox, Explanation, ModelRef, Prediction
from app.uploads import read_image, read_images

PREDICT_PATH = "/predict"
PREDICT_BATCH_PATH = "/predict/batch"

router = APIRouter(tags=["predict"], route_class=DirectRoute)

_IMAGE_BODY = {"type": "string", "format": "binary"}
_EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "Add `explain` to each prediction: the 28x28 input the model saw (a base64 "
    "PNG) and what preprocessing did (inverted or not, crop box, scale).",
}
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})
SINGLE_UPLOAD = {
    "parameters": [_EXPLAIN_PARAMETER],
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
    },
}
BATCH_UPLOAD = {
    "parameters": [_EXPLAIN_PARAMETER],
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
    },
}


NOT_ONE_DIGIT_MESSAGES = {
    Reason.NOT_A_DIGIT: "This does not look like a digit.",
    Reason.SEVERAL_DIGITS: "This looks like several digits; send one digit per image.",
}


def prediction(classified: Classified, explain: bool, refuse_non_digits: bool) -> Prediction:
    """The answer for one image, or `NotOneDigitError` when that is asked for and it is not a
    digit."""
    reason = classified.reason
    if reason is not None and refuse_non_digits:
        raise NotOneDigitError(reason, NOT_ONE_DIGIT_MESSAGES[reason])
    labels, probabilities = classified.model.labels, classified.probabilities
    best = int(probabilities.argmax())
    return Prediction(
        label=labels[best],
        confidence=float(probabilities[best]),
        probabilities=dict(zip(labels, probabilities.tolist(), strict=True)),
        is_digit=None if classified.model.detector is None else reason is None,
        reason=reason,
        model=ModelRef(name=classified.model.name, version=classified.model.version),
        explain=explanation(classified.preprocessed) if explain else None,
    )


def explanation(preprocessed: Preprocessed) -> Explanation:
    buffer = io.BytesIO()
    Image.fromarray(np.round(preprocessed.pixels).astype(np.uint8)).save(buffer, "PNG")
    left, top, right, bottom = preprocessed.crop_box
    return Explanation(
        input_png=base64.b64encode(buffer.getvalue()).decode("ascii"),
        inverted=preprocessed.inverted,
        crop_box=CropBox(left=left, top=top, right=right, bottom=bottom),
        scale=preprocessed.scale,
    )


def explain_requested(request: Request) -> bool:
    value = request.query_params.get("explain", "false").lower()
    if value not in _TRUE | _FALSE:
        raise InvalidRequestError(f"explain must be true or false, not {value[:20]!r}.")
    return value in _TRUE


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
    responses=error_responses(400, 408, 413, 415, 422, 503),
    openapi_extra=SINGLE_UPLOAD,
    summary="Classify one image",
    description="PNG, JPEG, GIF, BMP, WebP or TIFF; photos and canvas drawings are turned into "
    "the 28x28 grayscale input the model was trained on. The `Server-Timing` header tells how "
    "long decoding, queueing and inference took.",
)
async def predict(request: Request) -> Response:
    services = ready_services(request)
    explain = explain_requested(request)
    data, _ = await read_image(request)
    classified = await services.inference.classify(data)
    body = prediction(classified, explain, services.settings.non_digits == "refuse")
    return json_response(body, {"Server-Timing": server_timing(classified)})


def batch_item(
    filename: str | None,
    outcome: Classified | ServiceError,
    explain: bool,
    refuse_non_digits: bool,
) -> BatchItem:
    if isinstance(outcome, ServiceError):
        error = outcome
    else:
        try:
            return BatchItem(
                filename=filename, prediction=prediction(outcome, explain, refuse_non_digits)
            )
        except NotOneDigitError as refused:
            error = refused
    return BatchItem(filename=filename, prediction=None, error=error_detail(error))


@router.post(
    PREDICT_BATCH_PATH,
    response_model=BatchResponse,
    responses=error_responses(400, 408, 413, 415, 422, 503),
    openapi_extra=BATCH_UPLOAD,
    summary="Classify several images",
    description="Results come back in upload order; a file that cannot be classified gets an "
    "`error` object instead of a `prediction`, and the others are still classified.",
)
async def predict_batch(request: Request) -> Response:
    services = ready_services(request)
    explain = explain_requested(request)
    uploads = await read_images(request, services.settings.max_batch_files)
    outcomes = await asyncio.gather(
        *(services.inference.classify(data) for data, _ in uploads), return_exceptions=True
    )
    refuse_non_digits = services.settings.non_digits == "refuse"
    results = []
    for (_, filename), outcome in zip(uploads, outcomes, strict=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, ServiceError):
            raise outcome
        results.append(batch_item(filename, outcome, explain, refuse_non_digits))
    return json_response(BatchResponse(results=results))
