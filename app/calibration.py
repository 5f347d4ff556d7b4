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
# Probabilities of exactly zero have no logarithm; far below anything a confidence shows.
LOG_FLOOR = 1e-30


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
    """(N, classes) probabilities -> softmax(log(p) / temperature), row by row."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.maximum(probabilities, LOG_FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return np.asarray(scaled / scaled.sum(axis=1, keepdims=True), dtype=np.float32)
