"""Domain errors, raised where a problem is found.

They carry their HTTP status and a stable machine-readable code but import no web framework, so
preprocessing and batching (and the training script) can raise them too. The one place that turns
them into responses is `app.error_handlers`.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `code` is stable for clients to match on, `message` is for humans."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidImageError(ServiceError):
    status_code = 400
    code = "invalid_image"


class BlankImageError(InvalidImageError):
    code = "blank_image"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class ImageTooLargeError(PayloadTooLargeError):
    code = "image_too_large"


class RequestTimeoutError(ServiceError):
    status_code = 408
    code = "request_timeout"

    def __init__(self, message: str) -> None:
        # The rest of the body may still come: the connection cannot be reused.
        super().__init__(message, headers={"Connection": "close"})


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidRequestError(ServiceError):
    status_code = 422
    code = "invalid_request"


class NotOneDigitError(ServiceError):
    """Refused (CNN_SERVE_NON_DIGITS=refuse): the image is not one digit. The code is the
    reason, `not_a_digit` or `several_digits`."""

    status_code = 422

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = reason


class InvalidArgumentError(ServiceError):
    """A protocol request (TensorFlow Serving, KServe v2) whose content the model cannot take."""

    status_code = 400
    code = "invalid_argument"


class MalformedRequestError(ServiceError):
    status_code = 400
    code = "bad_request"


class ModelNotFoundError(ServiceError):
    status_code = 404
    code = "model_not_found"


class UnimplementedError(ServiceError):
    status_code = 501
    code = "unimplemented"


class NotReadyError(ServiceError):
    status_code = 503
    code = "not_ready"


class OverloadedError(ServiceError):
    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InferenceTimeoutError(OverloadedError):
    code = "inference_timeout"


class InferenceError(ServiceError):
    status_code = 500
    code = "inference_failed"
