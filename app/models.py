"""Find model versions on disk, load a SavedModel with its metadata, warm it up, serve it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.preprocess import OUTPUT_SIDE, PreprocessingProfile
from app.quiet_tensorflow import tf
from app.runtimes import Runner, Runtime, select_runner

logger = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"


class ModelLoadError(Exception):
    """The model directory is missing, incomplete or not a usable classifier."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A SavedModel ready to classify float32 (N, 28, 28) batches in [0, 255]."""

    name: str
    version: int
    path: Path
    labels: tuple[str, ...]
    profile: PreprocessingProfile
    metadata: dict[str, Any]
    runtime: Runtime
    _run: Runner = field(repr=False)
    # The signature stays callable only while the loaded module is referenced.
    _module: Any = field(repr=False)

    def predict_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 28, 28) images -> (N, classes) probabilities. Blocking: call it off the loop."""
        return self._run(np.stack(images).astype(np.float32, copy=False)[..., np.newaxis])

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run every batch size once so the first real requests do not pay for graph set-up."""
        for size in batch_sizes:
            self.predict_batch([np.zeros((OUTPUT_SIDE, OUTPUT_SIDE), np.float32)] * size)


def configure_tensorflow(intra_op_threads: int, inter_op_threads: int) -> None:
    """Size TensorFlow's thread pools; only possible before its runtime starts."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        logger.debug("TensorFlow is already initialised; keeping its thread settings")


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
    version_dir: Path, runtime: Runtime = Runtime.LITERT, *, threads: int = 2
) -> LoadedModel:
    """Load and check a version; `runtime` LiteRT falls back to TensorFlow if it cannot match."""
    metadata = _read_metadata(version_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as error:  # TensorFlow raises many types for a broken SavedModel.
        raise ModelLoadError(f"{version_dir} is not a loadable SavedModel: {error}") from None
    signature = loaded.signatures.get(SIGNATURE_NAME)
    if signature is None:
        raise ModelLoadError(f"{version_dir} has no {SIGNATURE_NAME!r} signature")
    input_name, output_name = _check_signature(signature, len(metadata["labels"]), version_dir)
    runtime, run = select_runner(
        runtime, version_dir, SIGNATURE_NAME, signature, input_name, output_name, threads=threads
    )
    return LoadedModel(
        name=str(metadata.get("name", version_dir.parent.name)),
        version=int(version_dir.name),
        path=version_dir,
        labels=tuple(str(label) for label in metadata["labels"]),
        profile=PreprocessingProfile(metadata.get("preprocessing", "mnist")),
        metadata=metadata,
        runtime=runtime,
        _run=run,
        _module=loaded,
    )


def _read_metadata(version_dir: Path) -> dict[str, Any]:
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


def _check_signature(signature: Any, num_classes: int, version_dir: Path) -> tuple[str, str]:
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"{version_dir}: expected one input and one output in the signature")
    input_name, input_spec = next(iter(inputs.items()))
    output_name, output_spec = next(iter(outputs.items()))
    if input_spec.dtype != tf.float32 or input_spec.shape.as_list()[1:] != [28, 28, 1]:
        raise ModelLoadError(f"{version_dir}: input is {input_spec}, not float32 (None, 28, 28, 1)")
    if output_spec.shape.as_list()[1:] != [num_classes]:
        raise ModelLoadError(
            f"{version_dir}: output is {output_spec}, but metadata.json lists {num_classes} labels"
        )
    return str(input_name), str(output_name)


class ModelRegistry:
    """Holds the model being served; the one place a new version would be swapped in."""

    def __init__(self, model: LoadedModel) -> None:
        self.current = model

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[tuple[LoadedModel, np.ndarray]]:
        model = self.current
        probabilities = model.predict_batch(images)
        return [(model, row) for row in probabilities]
