"""Load model versions, and hold the ones being served.

TensorFlow is not imported here: `app.runtimes` decides what executes the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from app import metrics
from app.calibration import temperature_of, temperature_scaled
from app.config import Settings
from app.detector import Detector, Reason, load_detector
from app.errors import ModelNotFoundError, NotReadyError
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


@dataclass(frozen=True, slots=True)
class Answer:
    """The probabilities served for one input, and why it is not one digit (None: it is, or
    the version has no detector), with the detector's P(digit) (None without one)."""

    probabilities: np.ndarray
    reason: Reason | None
    digit_probability: float | None = None


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
    runtime_reason: str  # Why this runtime executes the version (a fallback says so).
    signature: Signature
    run: Runner = field(repr=False)
    # Says which inputs are not one digit; None: the version is served without that check.
    detector: Detector | None = field(default=None, repr=False)
    # Served probabilities are the model's scaled by it (`app.calibration`); 1: as they are.
    temperature: float = 1.0

    def model_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 28, 28) images -> the model's own (N, classes) probabilities, uncalibrated.
        Blocking: call it off the loop."""
        return self.run(np.stack(images).astype(np.float32, copy=False)[..., np.newaxis])

    def predict_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 28, 28) images -> the (N, classes) probabilities the service answers."""
        return temperature_scaled(self.model_batch(images), self.temperature)

    def answer_batch(self, images: Sequence[np.ndarray]) -> list[Answer]:
        """(N, 28, 28) images -> the probabilities of each, and whether it is one digit."""
        batch = np.stack(images).astype(np.float32, copy=False)
        model_probabilities = self.run(batch[..., np.newaxis])
        probabilities = temperature_scaled(model_probabilities, self.temperature)
        if self.detector is None:
            return [Answer(row, None) for row in probabilities]
        # The detector learnt from the model's own answers.
        scores = self.detector.class_probabilities(batch, model_probabilities)
        return [
            Answer(row, reason, digit)
            for row, reason, digit in zip(
                probabilities, self.detector.reasons(scores), scores[:, 0].tolist(), strict=True
            )
        ]

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
    runtime, run, signature, runtime_reason = load_runner(
        version_dir,
        metadata,
        settings.runtime,
        num_classes=len(labels),
        threads=settings.inference_threads,
        inter_op_threads=settings.tf_inter_op_threads,
        cache_dir=settings.compile_cache_dir,
    )
    detector = (
        None if settings.non_digits == "off" else load_detector(version_dir, metadata, len(labels))
    )
    temperature = temperature_of(metadata)
    return LoadedModel(
        name=str(metadata.get("name", version_dir.parent.name)),
        version=int(version_dir.name),
        path=version_dir,
        labels=labels,
        profile=profile_of(metadata),
        metadata=metadata,
        runtime=runtime,
        runtime_reason=runtime_reason,
        signature=signature,
        run=run,
        detector=detector,
        temperature=temperature,
    )


class VersionState(StrEnum):
    """TensorFlow Serving's names for where a version is in its life."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    END = "END"  # Unloaded, or refused (then with an error message).


@dataclass(frozen=True)
class VersionStatus:
    state: VersionState
    error_message: str = ""


# An image to classify and the version it is for.
Work = tuple[np.ndarray, LoadedModel]


class ModelRegistry:
    """The versions being served, what became of every version seen, and the version labels.

    A request picks its version once (`resolve`), and its image travels through the batcher
    with that version (`Work`), so a version swapped out while the request waits still answers
    it, and is released only when nothing refers to it any more.
    """

    def __init__(self, name: str, model_dir: Path, labels: dict[str, int] | None = None) -> None:
        self.name = name
        self.model_dir = model_dir
        self.labels = dict(labels or {})
        self.served: dict[int, LoadedModel] = {}
        self.statuses: dict[int, VersionStatus] = {}

    @property
    def current(self) -> LoadedModel:
        """The newest version served: what a request that names no version gets."""
        if not self.served:
            raise NotReadyError("No model version is being served.")
        return self.served[max(self.served)]

    def versions_on_disk(self) -> list[int]:
        return available_versions(self.model_dir)

    def install(self, model: LoadedModel) -> None:
        self.served[model.version] = model
        self.statuses[model.version] = VersionStatus(VersionState.AVAILABLE)
        metrics.MODEL_INFO.labels(model.name, str(model.version), model.runtime.value).set(1)

    def retire(self, version: int) -> None:
        model = self.served.pop(version, None)
        self.statuses[version] = VersionStatus(VersionState.END)
        if model is not None:
            metrics.MODEL_INFO.labels(model.name, str(model.version), model.runtime.value).set(0)

    def refuse(self, version: int, error: str) -> None:
        self.statuses[version] = VersionStatus(VersionState.END, error)

    def mark_loading(self, version: int) -> None:
        if version not in self.served:
            self.statuses[version] = VersionStatus(VersionState.LOADING)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        """The served version a request names, or `ModelNotFoundError` (in TensorFlow
        Serving's words)."""
        if name != self.name:
            raise ModelNotFoundError(f"Servable not found for request: Latest({name})")
        if label is not None:
            if label not in self.labels:
                raise ModelNotFoundError(f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        if version is None:
            return self.current
        if version not in self.served:
            raise ModelNotFoundError(f"Servable not found for request: Specific({name}, {version})")
        return self.served[version]

    def version_statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[tuple[int, VersionStatus]]:
        """Every version seen, newest first, or the served one a request names (TensorFlow
        Serving's GetModelStatus)."""
        if name != self.name:
            raise ModelNotFoundError(f"Servable not found for request: Latest({name})")
        numbers = sorted(self.statuses, reverse=True)
        if version is not None or label is not None:
            numbers = [self.resolve(name, version, label).version]
        return [(number, self.statuses[number]) for number in numbers]

    def predict_batch(self, work: Sequence[Work]) -> list[tuple[LoadedModel, Answer]]:
        """Each image through the version it was queued for; one model call per version."""
        results: list[tuple[LoadedModel, Answer] | None] = [None] * len(work)
        groups: dict[int, list[int]] = {}
        for index, (_, model) in enumerate(work):
            groups.setdefault(id(model), []).append(index)
        for indices in groups.values():
            model = work[indices[0]][1]
            answers = model.answer_batch([work[index][0] for index in indices])
            for index, answer in zip(indices, answers, strict=True):
                results[index] = (model, answer)
        return [result for result in results if result is not None]
