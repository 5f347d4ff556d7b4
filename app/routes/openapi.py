"""How the routers document their error responses (all share `ErrorResponse`'s shape)."""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorResponse, ProtocolError

ERROR_DESCRIPTIONS = {
    400: "Not a decodable image, a blank one, or a malformed request.",
    404: "No such model or version.",
    408: "The request body did not arrive in time.",
    413: "The upload, or the image's pixel count, is over the limit.",
    415: "Unsupported Content-Type.",
    422: "A required field is missing or invalid.",
    503: "Not ready, or overloaded (see Retry-After).",
    504: "No result in time.",
}


PATH_PARAMETER_DESCRIPTIONS = {
    "model_name": "The model's name (`CNN_SERVE_MODEL_NAME`).",
    "model_version": "A version number.",
    "version": "A version number.",
    "label": "A version label.",
}


def path_parameters(path: str) -> dict[str, Any]:
    """`openapi_extra` documenting the path's parameters: routes that take the Request itself
    (`DirectRoute`) have no signature for FastAPI to read them from."""
    return {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            | {"description": description}
            for name, description in PATH_PARAMETER_DESCRIPTIONS.items()
            if "{" + name in path
        ]
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def protocol_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The TensorFlow Serving and KServe v2 endpoints' errors: `{"error": "..."}`."""
    return {
        status: {"model": ProtocolError, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }
