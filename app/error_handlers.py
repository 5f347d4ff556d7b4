"""The one place errors become HTTP responses.

Our own API answers `{"error": {"code": ..., "message": ...}}`. The TensorFlow Serving (`/v1/`)
and KServe v2 (`/v2/`) protocols answer `{"error": "..."}`, as their clients expect, with their
status conventions: an invalid argument is 400, a missed deadline 504.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app import metrics
from app.errors import InferenceTimeoutError, ServiceError
from app.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

_PROTOCOL_STATUS = {422: 400}
# Refusals that are the load's doing, not the request's, counted with the client errors.
_COUNTED_5XX = frozenset({"overloaded", "inference_timeout", "not_ready"})
_PROTOCOL_STATUS_BY_CODE = {InferenceTimeoutError.code: 504}


def error_response(
    path: str,
    status_code: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    if status_code < 500 or code in _COUNTED_5XX:
        metrics.REJECTED.labels(code).inc()
    return uncounted_error_response(path, status_code, code, message, headers)


def uncounted_error_response(
    path: str,
    status_code: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """The error's response in the shape the path's protocol expects."""
    if is_protocol_path(path):
        status_code = _PROTOCOL_STATUS_BY_CODE.get(code) or _PROTOCOL_STATUS.get(
            status_code, status_code
        )
        body = json.dumps({"error": message})
    else:
        body = ErrorResponse(error=ErrorDetail(code=code, message=message)).model_dump_json()
    return Response(body, status_code, headers=headers, media_type="application/json")


def is_protocol_path(path: str) -> bool:
    return path == "/v2" or path.startswith(("/v1/", "/v2/"))


def error_detail(error: ServiceError) -> ErrorDetail:
    return ErrorDetail(code=error.code, message=error.message)


def _http_code(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


async def _service_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServiceError)
    return error_response(
        request.url.path, error.status_code, error.code, error.message, error.headers
    )


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
    message = problems or "The request is invalid."
    return error_response(request.url.path, 422, "invalid_request", message)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    headers = dict(error.headers) if error.headers else None
    return error_response(
        request.url.path,
        error.status_code,
        _http_code(error.status_code),
        str(error.detail),
        headers,
    )


async def _unexpected_error(request: Request, error: Exception) -> Response:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        request.url.path, 500, "internal_error", "Something went wrong on our side."
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
