"""Response bodies, as documented in the OpenAPI schema.

The hot path serialises plain dicts with orjson; these models are the contract and its examples.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DIGITS = [str(digit) for digit in range(10)]


class ModelRef(BaseModel):
    name: str = Field(examples=["mnist"])
    version: int = Field(examples=[1])


class Prediction(BaseModel):
    label: str = Field(description="The most probable class name.", examples=["7"])
    confidence: float = Field(description="Its probability.", examples=[0.998])
    probabilities: dict[str, float] = Field(
        description="Every class name and its probability, in class order.",
        examples=[{label: (0.998 if label == "7" else 0.0002) for label in DIGITS}],
    )
    model: ModelRef


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable.", examples=["invalid_image"])
    message: str = Field(description="For humans.", examples=["Not a decodable image."])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    """One file's outcome: a prediction, or the error that file alone caused."""

    filename: str | None = Field(examples=["seven.png"])
    prediction: Prediction | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]


class Liveness(BaseModel):
    status: str = Field(examples=["alive"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    model: ModelRef


class BatchingInfo(BaseModel):
    max_batch_size: int
    batch_timeout_ms: float
    max_queue_size: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["mnist"])
    version: int = Field(examples=[1])
    versions_available: list[int] = Field(examples=[[1]])
    labels: list[str] = Field(examples=[DIGITS])
    input: dict[str, Any]
    preprocessing: str = Field(examples=["mnist"])
    runtime: str = Field(
        description="What executes the model: `litert` (compiled from the SavedModel at start-up "
        "and checked against it) or `tensorflow`.",
        examples=["litert"],
    )
    test_accuracy: float | None = Field(None, examples=[0.9965])
    batching: BatchingInfo
    limits: dict[str, int]
