"""Response bodies: routes build these models, so what is sent is what OpenAPI documents.

Unknown fields are forbidden, so the schema says `additionalProperties: false` and a test that
validates real bodies against it notices a field that drifted in or out.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DIGITS = [str(digit) for digit in range(10)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(Strict):
    name: str = Field(examples=["mnist"])
    version: int = Field(examples=[1])


class CropBox(Strict):
    left: float
    top: float
    right: float
    bottom: float


class Explanation(Strict):
    """What the model saw, and what preprocessing did to the upload to show it that."""

    input_png: str = Field(
        description="The 28x28 model input as a base64-encoded 8-bit grayscale PNG: light ink on "
        "black, exactly the pixels the model classified (rounded to whole gray levels)."
    )
    inverted: bool = Field(
        description="Dark ink on a light background was inverted to light on dark, as in MNIST."
    )
    crop_box: CropBox = Field(
        description="Where the glyph was found, in pixels of the upright image (after its EXIF "
        "orientation)."
    )
    scale: float = Field(description="Model-input pixels per image pixel.", examples=[0.0667])


class Prediction(Strict):
    label: str = Field(description="The most probable class name.", examples=["7"])
    confidence: float = Field(description="Its probability.", examples=[0.998])
    probabilities: dict[str, float] = Field(
        description="Every class name and its probability, in class order.",
        examples=[{label: (0.998 if label == "7" else 0.0002) for label in DIGITS}],
    )
    is_digit: bool | None = Field(
        description="Whether the image is one digit, as the version's detector judges it: false "
        "for a letter, a symbol, a drawing, a photo, or several digits side by side (then "
        "`label` is only the model's best guess). null when the version has no detector.",
        examples=[True],
    )
    reason: Literal["not_a_digit", "several_digits"] | None = Field(
        None,
        description="Why `is_digit` is false; absent otherwise.",
        exclude_if=lambda value: value is None,
    )
    model: ModelRef
    explain: Explanation | None = Field(
        None,
        description="Only with `?explain=true`: what the model saw and what preprocessing did.",
        exclude_if=lambda value: value is None,
    )


class ErrorDetail(Strict):
    code: str = Field(description="Stable, machine-readable.", examples=["invalid_image"])
    message: str = Field(description="For humans.", examples=["Not a decodable image."])


class ErrorResponse(Strict):
    error: ErrorDetail


class ProtocolError(Strict):
    """Errors of the TensorFlow Serving and KServe v2 endpoints, as their clients expect."""

    error: str = Field(examples=["Servable not found for request: Specific(mnist, 9)"])


class BatchItem(Strict):
    """One file's outcome: a prediction, or the error that file alone caused."""

    filename: str | None = Field(examples=["seven.png"])
    prediction: Prediction | None = None
    error: ErrorDetail | None = None


class BatchResponse(Strict):
    results: list[BatchItem]


class Liveness(Strict):
    status: str = Field(examples=["alive"])


class Readiness(Strict):
    status: str = Field(examples=["ready"])
    model: ModelRef


class VersionStatusInfo(Strict):
    state: str = Field(examples=["AVAILABLE"])
    error_message: str = Field(examples=[""])


class BatchingInfo(Strict):
    max_batch_size: int
    batch_timeout_ms: float
    max_queue_size: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["mnist"])
    version: int = Field(examples=[1])
    versions_available: list[int] = Field(
        description="Version directories on disk.", examples=[[1, 2]]
    )
    versions_served: list[int] = Field(
        description="The versions answering requests; the newest is the default.", examples=[[2]]
    )
    version_labels: dict[str, int] = Field(examples=[{"stable": 2}])
    version_status: dict[str, VersionStatusInfo] = Field(
        description="Every version seen: AVAILABLE, LOADING, or END (retired, or refused with "
        "the reason)."
    )
    labels: list[str] = Field(examples=[DIGITS])
    input: dict[str, Any]
    preprocessing: str = Field(examples=["mnist"])
    runtime: str = Field(
        description="What executes the model: `litert-int8` (LiteRT with int8 weights checked "
        "on the whole test split), `litert` (float32, compiled from the SavedModel at start-up "
        "and checked against it) or `tensorflow`.",
        examples=["litert-int8"],
    )
    runtime_reason: str = Field(
        description="Why that runtime runs the version, and why not a faster one if it fell back.",
        examples=[
            "int8 weights, checked on all 10,000 test images: 99.63% against 99.64% for the "
            "float32 SavedModel"
        ],
    )
    test_accuracy: float | None = Field(None, examples=[0.9965])
    batching: BatchingInfo
    limits: dict[str, int]
