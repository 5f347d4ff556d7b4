"""Quantise a version's weights to int8 for LiteRT, and keep them only if the test split agrees.

    python -m model.quantize model/export/mnist/2 --data ../shared/data/mnist.npz

Post-training dynamic-range quantisation: the weights are stored as int8 and LiteRT's XNNPACK
quantises the activations on the fly, which costs about a quarter of float32's time for this CNN
and needs no calibration data. The int8 model and the SavedModel are both scored on the whole
test split; only when the int8 model loses at most `MAX_QUANTISATION_LOSS` of accuracy is it
written beside the SavedModel (`litert_int8.tflite`), and the service serves it. Either way the
figures are recorded in `metadata.json`. `model.train` runs this on every version it exports.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app import tensorflow_runtime
from app.compile_cache import converter_version
from app.litert_runtime import LiteRTRunner
from app.model_format import (
    INT8_FILE,
    INT8_RECORD,
    MAX_QUANTISATION_LOSS,
    Runner,
    labels_of,
    profile_of,
    read_metadata,
)
from model.data import load_dataset
from model.records import record_in_metadata, write_atomically

BATCH_SIZE = 500


@dataclass(frozen=True)
class QuantisationCheck:
    test_accuracy: float  # Of the int8 weights under LiteRT.
    reference_accuracy: float  # Of the SavedModel's own signature (float32).
    test_images: int
    passed: bool
    sha256: str  # Of the int8 flatbuffer; "" when it did not pass and was not written.
    converter: str

    @property
    def loss_points(self) -> float:
        return 100 * (self.reference_accuracy - self.test_accuracy)


def quantise(version_dir: Path, x_test: np.ndarray, y_test: np.ndarray) -> QuantisationCheck:
    """Convert, score both on (x_test, y_test) (uint8 (N, 28, 28) model inputs), and write the
    int8 flatbuffer and the record into the version directory."""
    metadata = read_metadata(version_dir)
    reference, _ = tensorflow_runtime.load_signature(version_dir, len(labels_of(metadata)))
    flatbuffer = tensorflow_runtime.convert_to_litert(version_dir, int8_weights=True)
    quantised = LiteRTRunner(flatbuffer, threads=os.cpu_count() or 1)
    reference_accuracy = _accuracy(reference, x_test, y_test)
    test_accuracy = _accuracy(quantised, x_test, y_test)
    passed = reference_accuracy - test_accuracy <= MAX_QUANTISATION_LOSS
    int8_path = version_dir / INT8_FILE
    if passed:
        write_atomically(int8_path, flatbuffer)
    else:
        int8_path.unlink(missing_ok=True)
    check = QuantisationCheck(
        test_accuracy=test_accuracy,
        reference_accuracy=reference_accuracy,
        test_images=len(y_test),
        passed=passed,
        sha256=hashlib.sha256(flatbuffer).hexdigest() if passed else "",
        converter=converter_version(),
    )
    record_in_metadata(
        version_dir, INT8_RECORD, {"file": INT8_FILE if passed else None, **asdict(check)}
    )
    return check


def _accuracy(run: Runner, images: np.ndarray, labels: np.ndarray) -> float:
    predictions = np.concatenate(
        [
            np.asarray(run(images[start : start + BATCH_SIZE].astype(np.float32)[..., np.newaxis]))
            for start in range(0, len(images), BATCH_SIZE)
        ]
    ).argmax(axis=1)
    return round(float((predictions == labels).mean()), 6)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir", type=Path, help="e.g. model/export/mnist/2")
    parser.add_argument("--data", type=Path, help="the dataset file or folder (as model.train)")
    args = parser.parse_args(argv)
    metadata = read_metadata(args.version_dir)
    dataset = load_dataset(
        metadata["dataset"], args.data, profile=profile_of(metadata), seed=metadata.get("seed", 0)
    )
    check = quantise(args.version_dir, dataset.x_test, dataset.y_test)
    verdict = (
        f"written to {args.version_dir / INT8_FILE}: the service serves it"
        if check.passed
        else f"not written: over the {100 * MAX_QUANTISATION_LOSS:.2f}-point limit"
    )
    print(
        f"int8 weights: {check.test_accuracy:.2%} on {check.test_images:,} test images, "
        f"float32 {check.reference_accuracy:.2%} (loss {check.loss_points:.2f} points); {verdict}"
    )


if __name__ == "__main__":
    main()
