"""Find model versions on disk, load one, and hold the one being served.

TensorFlow is not imported here: `app.runtimes` decides what executes the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.errors import ModelNotFoundError
from app.model_format import (
    INPUT_SIDE,
    ModelLoadError,
    PreprocessingProfile,
    Runner,
    Signature,
    labels_of,
    profile_of,
    read_metadata,
)
from app.runtimes import Runtime, load_runner


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
    signature: Signature
    run: Runner = field(repr=False)

    def predict_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 28, 28) images -> (N, classes) probabilities. Blocking: call it off the loop."""
        return self.run(np.stack(images).astype(np.float32, copy=False)[..., np.newaxis])

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run every batch size once so the first real requests do not pay for set-up."""
        for size in batch_sizes:
            self.predict_batch([np.zeros((INPUT_SIDE, INPUT_SIDE), np.float32)] * size)


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


def load_model(version_dir: Path, settings: Settings) -> LoadedModel:
    """Load and check a version with the settings' runtime, threads and compile cache."""
    metadata = read_metadata(version_dir)
    labels = labels_of(metadata)
    runtime, run, signature = load_runner(
        version_dir,
        settings.runtime,
        num_classes=len(labels),
        threads=settings.inference_threads,
        inter_op_threads=settings.tf_inter_op_threads,
        cache_dir=settings.compile_cache_dir,
    )
    return LoadedModel(
        name=str(metadata.get("name", version_dir.parent.name)),
        version=int(version_dir.name),
        path=version_dir,
        labels=labels,
        profile=profile_of(metadata),
        metadata=metadata,
        runtime=runtime,
        signature=signature,
        run=run,
    )


class ModelRegistry:
    """The model being served and the versions on disk beside it.

    `predict_batch` reads `current` once per batch and returns the model with every row, so a
    later swap of `current` (hot reload) can never mix two versions within one batch or answer
    a request with a version it did not come from.
    """

    def __init__(self, model_dir: Path, model: LoadedModel) -> None:
        self.model_dir = model_dir
        self.current = model

    def versions_on_disk(self) -> list[int]:
        return available_versions(self.model_dir)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        """The served model a protocol request names, or `ModelNotFoundError` (in TensorFlow
        Serving's words)."""
        model = self.current
        if name != model.name:
            raise ModelNotFoundError(f"Servable not found for request: Latest({name})")
        if label is not None:
            raise ModelNotFoundError(f"Unrecognized servable version label: {label}")
        if version is not None and version != model.version:
            raise ModelNotFoundError(f"Servable not found for request: Specific({name}, {version})")
        return model

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[tuple[LoadedModel, np.ndarray]]:
        model = self.current
        probabilities = model.predict_batch(images)
        return [(model, row) for row in probabilities]
