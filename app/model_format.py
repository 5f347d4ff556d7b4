"""What a servable model version is: the facts shared by training, serving and compiling.

A version is a directory `<base>/<name>/<version>/` holding a SavedModel whose `serving_default`
signature maps one float32 input (N, 28, 28, 1) in [0, 255] to one (N, classes) output of
probabilities, and a `metadata.json` that lists the class labels and the preprocessing profile.

This module imports nothing else of `app`, so every other module can depend on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

SIGNATURE_NAME = "serving_default"
# The version's weights quantised to int8 for LiteRT (dynamic range: int8 weights, activations
# quantised on the fly), written beside the SavedModel only once they passed the check below on
# the whole test split; the check's figures are recorded in the metadata under INT8_RECORD.
INT8_FILE = "litert_int8.tflite"
INT8_RECORD = "litert_int8"
# The most test accuracy (a fraction: 0.0005 = 0.05 points) quantisation may cost.
MAX_QUANTISATION_LOSS = 0.0005
INPUT_NAME = "image"
INPUT_SIDE = 28
INPUT_SHAPE = (INPUT_SIDE, INPUT_SIDE, 1)
METADATA_FILE = "metadata.json"

# (N, 28, 28, 1) float32 batch in [0, 255] -> (N, classes) probabilities. Blocking.
Runner = Callable[[np.ndarray], np.ndarray]


class PreprocessingProfile(StrEnum):
    """How uploads are turned into the model's input (see `app.preprocess`)."""

    MNIST = "mnist"
    FIT = "fit"


@dataclass(frozen=True)
class Signature:
    """The serving signature's one input and one output, by name."""

    input_name: str
    output_name: str
    num_classes: int


class ModelLoadError(Exception):
    """The model directory is missing, incomplete or not a usable classifier."""


def read_metadata(version_dir: Path) -> dict[str, Any]:
    path = version_dir / METADATA_FILE
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
        PreprocessingProfile(metadata.get("preprocessing", PreprocessingProfile.MNIST))
    except ValueError:
        raise ModelLoadError(
            f"{path}: unknown preprocessing {metadata['preprocessing']!r}"
        ) from None
    return dict(metadata)


def labels_of(metadata: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(label) for label in metadata["labels"])


def profile_of(metadata: dict[str, Any]) -> PreprocessingProfile:
    return PreprocessingProfile(metadata.get("preprocessing", PreprocessingProfile.MNIST))


def check_model_io(
    version_dir: Path,
    *,
    input_name: str,
    input_shape: Sequence[int | None],
    input_is_float32: bool,
    output_name: str,
    output_shape: Sequence[int | None],
    num_classes: int,
) -> Signature:
    """The model must take float32 (N, 28, 28, 1) and give one probability per label."""
    if not input_is_float32 or list(input_shape)[1:] != list(INPUT_SHAPE):
        raise ModelLoadError(
            f"{version_dir}: input is {list(input_shape)}, not float32 (None, "
            f"{', '.join(map(str, INPUT_SHAPE))})"
        )
    if list(output_shape)[1:] != [num_classes]:
        raise ModelLoadError(
            f"{version_dir}: output is {list(output_shape)}, but {METADATA_FILE} lists "
            f"{num_classes} labels"
        )
    return Signature(input_name, output_name, num_classes)
