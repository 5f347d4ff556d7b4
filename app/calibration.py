"""What `confidence` means: the model's probabilities, temperature-scaled.

A network trained to classify is usually surer than it is right. `model.calibrate` fits one
temperature T on uploads of digits the model never trained on and records it in the version's
`metadata.json`; served probabilities are then softmax(log(p) / T), which keeps every label and
moves each confidence toward how often such answers are right. A version without the record is
served as its model answers (T = 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.model_format import ModelLoadError

CALIBRATION_RECORD = "calibration"


def temperature_of(metadata: dict[str, Any]) -> float:
    """The version's fitted temperature; 1.0 when it has none."""
    record = metadata.get(CALIBRATION_RECORD)
    if record is None:
        return 1.0
    try:
        temperature = float(record["temperature"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"unusable {CALIBRATION_RECORD} record: {error!r}") from error
    if not math.isfinite(temperature) or temperature <= 0:
        raise ModelLoadError(f"calibration temperature {temperature} is not a positive number")
    return temperature


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """(N, classes) probabilities -> softmax(log(p) / temperature), row by row.

    That is p ** (1 / temperature), normalised: three array operations on the hot path, and no
    overflow (every power is at most 1, and the largest of a row at least 1/classes ** (1/T)).
    """
    if temperature == 1.0:
        return probabilities
    scaled: np.ndarray = np.power(probabilities, 1 / temperature, dtype=np.float32)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled
