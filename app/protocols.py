"""What the service says about itself in KServe v2 / Triton's terms, over REST and gRPC alike."""

from __future__ import annotations

from app.errors import ModelNotFoundError
from app.models import ModelRegistry, VersionState

SERVER_NAME = "cnn-serve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
PLATFORM = "tensorflow_savedmodel"
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
