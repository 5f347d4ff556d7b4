"""Accuracy reports: the confusion matrix, printed and drawn, and the training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def format_report(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    width = max(6, *(len(name) for name in class_names))
    lines = [f"Accuracy: {correct / total:.4f} ({correct}/{total})", "", "Per class:"]
    for index, name in enumerate(class_names):
        count = int(matrix[index].sum())
        accuracy = matrix[index, index] / count if count else float("nan")
        lines.append(f"  {name:>{width}}  {accuracy:.4f}  ({int(matrix[index, index])}/{count})")
    lines += ["", "Confusion matrix (rows: true, columns: predicted):"]
    lines.append(" " * (width + 2) + "".join(f"{name[:6]:>7}" for name in class_names))
    for index, name in enumerate(class_names):
        lines.append(f"  {name:>{width}}" + "".join(f"{value:>7}" for value in matrix[index]))
    return "\n".join(lines)


def save_training_curves(history: Mapping[str, Sequence[float]], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        if key in history:
            loss_axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
    for key in ("accuracy", "val_accuracy"):
        if key in history:
            accuracy_axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
    loss_axis.set(title="Loss", xlabel="epoch")
    accuracy_axis.set(title="Accuracy", xlabel="epoch")
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(np.log1p(matrix), cmap="Blues")
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    threshold = np.log1p(matrix).max() / 2
    for (row, column), value in np.ndenumerate(matrix):
        if value:
            colour = "white" if np.log1p(value) > threshold else "black"
            axis.text(column, row, str(value), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, label="log(1 + count)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _pyplot() -> Any:
    """matplotlib is optional (the `train` extra): without it the plots are skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping plots (pip install 'cnn-serve[train]')")
        return None
    return plt
