"""Whether the model's input is one digit at all: a small network beside the model.

It reads what the model read (the 28x28 input) and what the model answered (its probabilities),
and says `digit`, `not_a_digit` (a letter, a symbol, a drawing, a photo) or `several_digits`
(a number such as "42", squeezed into one input). `model.train_detector` trains it on
uploads of `model.non_digits` and writes `detector.tflite` beside the version's SavedModel; a
version without one is served without the check.

It runs under LiteRT on the whole batch, after the model, in the batcher's thread.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from app.litert_runtime import LockedSignature
from app.model_format import INPUT_SIDE, ModelLoadError

DETECTOR_FILE = "detector.tflite"


class Reason(StrEnum):
    """Why an input is not answered as a digit (also the error code when such answers are
    refused)."""

    NOT_A_DIGIT = "not_a_digit"
    SEVERAL_DIGITS = "several_digits"


# The detector's output classes, in order.
DIGIT = "digit"
CLASSES = (DIGIT, Reason.NOT_A_DIGIT.value, Reason.SEVERAL_DIGITS.value)


# The network (built by `model.train_detector`): two 3x3 convolutions with 2x2 max pooling on
# the input, then dense layers on what they found and on the model's answer.
CONV_FILTERS = (16, 32)
DENSE_UNITS = (64,)
LOG_FLOOR = 1e-12
LOG_SCALE = 0.1
IMAGE_INPUT, EVIDENCE_INPUT, OUTPUT = "image", "evidence", "classes"


def evidence(probabilities: np.ndarray) -> np.ndarray:
    """What the detector reads of the model's answer: log-probabilities (the logits up to a
    constant), scaled near 1. Saturated probabilities hide how the classes compare; their
    logarithms do not."""
    return np.asarray(np.log(np.maximum(probabilities, LOG_FLOOR)) * LOG_SCALE, dtype=np.float32)


class Detector:
    """The detector's LiteRT flatbuffer, and the threshold on P(digit)."""

    def __init__(self, flatbuffer: bytes, threshold: float) -> None:
        self._run = LockedSignature(_interpreter(flatbuffer))
        # An input is a digit unless P(digit) falls below this; chosen on held-out digits.
        self.threshold = threshold

    def class_probabilities(self, pixels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """(N, 28, 28) model inputs in [0, 255] and the model's (N, classes) probabilities ->
        (N, 3) probabilities of `CLASSES`."""
        return self.run(pixels, evidence(probabilities))

    def run(self, pixels: np.ndarray, model_evidence: np.ndarray) -> np.ndarray:
        """`class_probabilities` from the model's `evidence` rather than its probabilities."""
        image = np.ascontiguousarray(pixels, dtype=np.float32)[..., np.newaxis]
        return self._run(OUTPUT, **{IMAGE_INPUT: image, EVIDENCE_INPUT: model_evidence})

    def reasons(self, scores: np.ndarray) -> list[Reason | None]:
        """`class_probabilities` -> None for each input that is a digit, else why it is not."""
        flagged = scores[:, 0] < self.threshold
        several = scores[:, 2] > scores[:, 1]
        return [
            (Reason.SEVERAL_DIGITS if is_several else Reason.NOT_A_DIGIT) if is_flagged else None
            for is_flagged, is_several in zip(flagged.tolist(), several.tolist(), strict=True)
        ]


def _interpreter(flatbuffer: bytes) -> Any:
    """LiteRT's interpreter, or TensorFlow's where LiteRT is not installed (the same engine)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    return Interpreter(model_content=flatbuffer, num_threads=1)


def load_detector(version_dir: Path, metadata: dict[str, Any], classes: int) -> Detector | None:
    """The version's detector, None if it has none; `ModelLoadError` if it is unusable."""
    described = metadata.get("detector")
    if described is None:
        return None
    path = version_dir / DETECTOR_FILE
    try:
        flatbuffer = path.read_bytes()
        if hashlib.sha256(flatbuffer).hexdigest() != described["sha256"]:
            raise ValueError("it is not the file that was trained and checked")
        threshold = float(described["threshold"])
        if not 0 < threshold < 1:
            raise ValueError(f"threshold {threshold} is not a probability")
        detector = Detector(flatbuffer, threshold)
        scores = detector.class_probabilities(
            np.zeros((1, INPUT_SIDE, INPUT_SIDE), np.float32), np.full((1, classes), 1 / classes)
        )
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ModelLoadError(f"unusable detector {path}: {error}") from error
    if scores.shape != (1, len(CLASSES)):
        raise ModelLoadError(f"detector {path} does not give {len(CLASSES)} classes")
    return detector
