"""Find model versions on disk, read their metadata, load one, serve it.

TensorFlow is not imported here: `app.runtimes` decides what executes the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.preprocess import OUTPUT_SIDE, PreprocessingProfile

if TYPE_CHECKING:
    from app.runtimes import Runtime

SIGNATURE_NAME = "serving_default"


class ModelLoadError(Exception):
    """The model directory is missing, incomplete or not a usable classifier."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model version ready to classify float32 (N, 28, 28) batches in [0, 255]."""

    name: str
    version: int
    path: Path
    labels: tuple[str, ...]
    profile: PreprocessingProfile
    metadata: dict[str, Any]
    runtime: Runtime
    _run: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    def predict_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 28, 28) images -> (N, classes) probabilities. Blocking: call it off the loop."""
        return self._run(np.stack(images).astype(np.float32, copy=False)[..., np.newaxis])

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run every batch size once so the first real requests do not pay for set-up."""
        for size in batch_sizes:
            self.predict_batch([np.zeros((OUTPUT_SIDE, OUTPUT_SIDE), np.float32)] * size)


def available_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(
        int(path.name) for path in model_dir.iterdir() if path.name.isdigit() and path.is_dir()
    )


def resolve_version_dir(model_dir: Path, version: int | None = None) -> Path:
    """The pinned version's directory, or the newest one under `model_dir`."""
    versions = available_versions(model_dir)
    if not versions:
        raise ModelLoadError(f"no model versions under {model_dir} (expected {model_dir}/1/ ...)")
    if version is None:
        return model_dir / str(versions[-1])
    if version not in versions:
        raise ModelLoadError(f"version {version} not found under {model_dir}; have {versions}")
    return model_dir / str(version)


def load_model(
    version_dir: Path,
    runtime: Runtime | None = None,
    *,
    threads: int = 2,
    inter_op_threads: int = 1,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load and check a version; LiteRT (the default) falls back to TensorFlow if it must.

    `cache_dir` keeps compiled LiteRT models across starts (see `app.compile_cache`).
    """
    from app.runtimes import Runtime, load_runner

    metadata = read_metadata(version_dir)
    labels = tuple(str(label) for label in metadata["labels"])
    runtime, run = load_runner(
        version_dir,
        runtime or Runtime.LITERT,
        num_classes=len(labels),
        threads=threads,
        inter_op_threads=inter_op_threads,
        cache_dir=cache_dir,
    )
    return LoadedModel(
        name=str(metadata.get("name", version_dir.parent.name)),
        version=int(version_dir.name),
        path=version_dir,
        labels=labels,
        profile=PreprocessingProfile(metadata.get("preprocessing", "mnist")),
        metadata=metadata,
        runtime=runtime,
        _run=run,
    )


def read_metadata(version_dir: Path) -> dict[str, Any]:
    path = version_dir / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path} is not valid JSON: {error}") from None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if not isinstance(labels, list) or len(labels) < 2:
        raise ModelLoadError(f"{path} must list at least two class labels under 'labels'")
    try:
        PreprocessingProfile(metadata.get("preprocessing", "mnist"))
    except ValueError:
        raise ModelLoadError(
            f"{path}: unknown preprocessing {metadata['preprocessing']!r}"
        ) from None
    return dict(metadata)


def check_model_io(
    version_dir: Path,
    *,
    input_shape: Sequence[int | None],
    input_is_float32: bool,
    output_shape: Sequence[int | None],
    num_classes: int,
) -> None:
    """The model must take float32 (N, 28, 28, 1) and give one probability per label."""
    if not input_is_float32 or list(input_shape)[1:] != [OUTPUT_SIDE, OUTPUT_SIDE, 1]:
        raise ModelLoadError(
            f"{version_dir}: input is {list(input_shape)}, not float32 (None, 28, 28, 1)"
        )
    if list(output_shape)[1:] != [num_classes]:
        raise ModelLoadError(
            f"{version_dir}: output is {list(output_shape)}, but metadata.json lists "
            f"{num_classes} labels"
        )


class ModelRegistry:
    """Holds the model being served; the one place a new version would be swapped in."""

    def __init__(self, model: LoadedModel) -> None:
        self.current = model

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[tuple[LoadedModel, np.ndarray]]:
        model = self.current
        probabilities = model.predict_batch(images)
        return [(model, row) for row in probabilities]
