"""What the service says about itself in the protocols' terms (KServe v2 / Triton, TensorFlow
Serving), over REST and gRPC alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.detector import DIGIT
from app.errors import InvalidArgumentError, ModelNotFoundError
from app.inference import Classified
from app.model_format import SIGNATURE_NAME
from app.models import LoadedModel, ModelRegistry, VersionState

SERVER_NAME = "cnn-serve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
PLATFORM = "tensorflow_savedmodel"
# An output a KServe client may ask for beside the probabilities: BYTES [N], for each image
# "digit", "not_a_digit" or "several_digits" (what `is_digit` and `reason` say on /predict).
DIGIT_CHECK_OUTPUT = "digit_check"
# TensorFlow Serving's way to the same: a second signature, answering both outputs.
DIGIT_CHECK_SIGNATURE = "digit_check"
# Triton's words for the states of a version in its repository index.
_REPOSITORY_STATES = {
    VersionState.AVAILABLE: "READY",
    VersionState.LOADING: "LOADING",
    VersionState.END: "UNAVAILABLE",
}


def version_number(text: str) -> int | None:
    """A KServe v2 model version as given (a path segment, a message field): None when empty."""
    if not text:
        return None
    if not text.isdigit():
        raise ModelNotFoundError(f"Model version '{text}' is not a version number.")
    return int(text)


def repository_index(registry: ModelRegistry) -> list[dict[str, str]]:
    """Triton's repository index: every version seen, its state and why, oldest first."""
    return [
        {
            "name": registry.name,
            "version": str(number),
            "state": _REPOSITORY_STATES[status.state],
            "reason": status.error_message,
        }
        for number, status in sorted(registry.statuses.items())
    ]


def output_names(model: LoadedModel) -> list[str]:
    """The outputs a KServe client may ask for: the probabilities, and the digit check when the
    version has a detector."""
    names = [model.signature.output_name]
    return [*names, DIGIT_CHECK_OUTPUT] if model.detector is not None else names


def digit_checks(classified: Sequence[Classified]) -> list[str]:
    return [DIGIT if item.reason is None else item.reason.value for item in classified]


def signature_names(model: LoadedModel) -> list[str]:
    """TensorFlow Serving signatures: the model's own, and the digit check's when it has one."""
    names = [SIGNATURE_NAME]
    return [*names, DIGIT_CHECK_SIGNATURE] if model.detector is not None else names


def requested_signature(name: Any, model: LoadedModel, *, digit_check: bool) -> str:
    """The TensorFlow Serving signature a request names (empty: the default one), if the call
    offers it: the digit check's only to Predict (`digit_check`) of a version with a detector."""
    name = name or SIGNATURE_NAME
    allowed = signature_names(model) if digit_check else [SIGNATURE_NAME]
    if name not in allowed:
        raise InvalidArgumentError(f'Serving signature key "{name}" not found.')
    return str(name)
