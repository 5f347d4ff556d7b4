"""Evaluate an exported SavedModel on its dataset's test split.

    python -m model.evaluate model/export/mnist/1 --data ../shared/data/mnist.npz

Prints the overall and per-class accuracy and the confusion matrix.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from app.preprocess import PreprocessingProfile
from model.data import load_dataset
from model.report import confusion_matrix, format_report

BATCH_SIZE = 1000


def predict(model_dir: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities from the SavedModel's serving signature, for uint8 (N, 28, 28)."""
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    outputs = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start : start + BATCH_SIZE].astype(np.float32)[..., np.newaxis]
        result = serve(image=tf.constant(batch))
        outputs.append(next(iter(result.values())).numpy())
    return np.concatenate(outputs)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an export such as model/export/mnist/1")
    parser.add_argument("--data", type=Path, help="local .npz file or IDX folder")
    parser.add_argument("--dataset", help="override the dataset named in metadata.json")
    args = parser.parse_args(argv)

    metadata = json.loads((args.model_dir / "metadata.json").read_text())
    dataset = load_dataset(
        args.dataset or metadata["dataset"],
        args.data,
        profile=PreprocessingProfile(metadata["preprocessing"]),
        seed=metadata.get("seed", 0),
    )
    probabilities = predict(args.model_dir, dataset.x_test)
    matrix = confusion_matrix(dataset.y_test, probabilities.argmax(axis=1), len(metadata["labels"]))
    print(f"Model: {metadata['name']} version {metadata['version']} ({args.model_dir})")
    print(f"Test set: {dataset.name}, {len(dataset.x_test)} images\n")
    print(format_report(matrix, metadata["labels"]))
    return float(np.trace(matrix) / matrix.sum())


if __name__ == "__main__":
    main()
