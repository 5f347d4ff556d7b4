"""The committed model: its files, its metadata, and its accuracy on official MNIST test digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.config import Settings
from app.models import load_model
from app.runtimes import Runtime
from model import evaluate
from tests.conftest import COMMITTED_MODEL

pytestmark = pytest.mark.slow

REQUIRED_ACCURACY = 0.996


@pytest.fixture(scope="module")
def metadata() -> dict[str, object]:
    return dict(json.loads((COMMITTED_MODEL / "metadata.json").read_text()))


def test_committed_model_is_small_and_complete(metadata):
    size = sum(path.stat().st_size for path in COMMITTED_MODEL.rglob("*") if path.is_file())
    assert size < 5 * 1024 * 1024
    for name in ("saved_model.pb", "variables", "training_curves.png", "confusion_matrix.png"):
        assert (COMMITTED_MODEL / name).exists(), name
    assert metadata["architecture"] == "default"
    assert metadata["dataset"] == "mnist"
    assert metadata["test_images"] == 10_000
    assert float(metadata["test_accuracy"]) >= REQUIRED_ACCURACY  # type: ignore[arg-type]


def test_accuracy_on_committed_test_digits(digits, compile_cache_dir):
    images, labels = digits
    model = load_model(COMMITTED_MODEL, Settings(compile_cache_dir=compile_cache_dir))
    predictions = model.predict_batch(list(images.astype(np.float32))).argmax(axis=1)
    assert np.mean(predictions == labels) >= 0.99


@pytest.mark.mnist
def test_accuracy_on_the_full_official_test_set(full_mnist, metadata, capsys):
    accuracy = evaluate.main([str(COMMITTED_MODEL), "--data", str(full_mnist)])
    assert accuracy >= REQUIRED_ACCURACY
    assert accuracy == pytest.approx(float(metadata["test_accuracy"]), abs=1e-6)  # type: ignore[arg-type]
    assert "Confusion matrix" in capsys.readouterr().out


@pytest.mark.mnist
def test_the_served_runtime_scores_the_same_on_the_full_test_set(
    full_mnist, metadata, compile_cache_dir
):
    with np.load(full_mnist) as data:
        images, labels = data["x_test"].astype(np.float32), data["y_test"]
    """The int8 weights served by default score what their check recorded, within 0.05 points
    of the SavedModel; float32 LiteRT scores exactly what the SavedModel scores."""
    for runtime, expected in [
        (Runtime.LITERT_INT8, metadata["litert_int8"]["test_accuracy"]),  # type: ignore[index]
        (Runtime.LITERT, metadata["test_accuracy"]),
    ]:
        settings = Settings(runtime=runtime, compile_cache_dir=compile_cache_dir)
        model = load_model(COMMITTED_MODEL, settings)
        assert model.runtime is runtime
        predictions = np.concatenate(
            [
                model.predict_batch(list(images[start : start + 500]))
                for start in range(0, 10_000, 500)
            ]
        ).argmax(axis=1)
        accuracy = float(np.mean(predictions == labels))
        assert accuracy == pytest.approx(float(expected), abs=1e-6)  # type: ignore[arg-type]
        assert accuracy >= float(metadata["test_accuracy"]) - 0.0005  # type: ignore[arg-type]
