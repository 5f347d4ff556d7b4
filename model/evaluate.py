"""Evaluate an exported SavedModel on its dataset's test split.

    python -m model.evaluate model/export/mnist/1 --data ../shared/data/mnist.npz

Prints the overall and per-class accuracy and the confusion matrix.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from app import tensorflow_runtime
from app.model_format import labels_of, profile_of, read_metadata
from model.data import load_dataset
from model.report import confusion_matrix, format_report

BATCH_SIZE = 1000


def predict(model_dir: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities from the SavedModel's serving signature, for uint8 (N, 28, 28)."""
    serve = tensorflow_runtime.load_signature(model_dir, len(labels_of(read_metadata(model_dir))))
    batches = [
        serve(images[start : start + BATCH_SIZE].astype(np.float32)[..., np.newaxis])
        for start in range(0, len(images), BATCH_SIZE)
    ]
    return np.concatenate(batches)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an export such as model/export/mnist/1")
    parser.add_argument("--data", type=Path, help="local .npz file or IDX folder")
    parser.add_argument("--dataset", help="override the dataset named in metadata.json")
    args = parser.parse_args(argv)

    metadata = read_metadata(args.model_dir)
    labels = labels_of(metadata)
    dataset = load_dataset(
        args.dataset or metadata["dataset"],
        args.data,
        profile=profile_of(metadata),
        seed=metadata.get("seed", 0),
    )
    probabilities = predict(args.model_dir, dataset.x_test)
    matrix = confusion_matrix(dataset.y_test, probabilities.argmax(axis=1), len(labels))
    print(f"Model: {metadata['name']} version {metadata['version']} ({args.model_dir})")
    print(f"Test set: {dataset.name}, {len(dataset.x_test)} images\n")
    print(format_report(matrix, labels))
    return float(np.trace(matrix) / matrix.sum())


if __name__ == "__main__":
    main()
