"""Calibrated confidence: temperature scaling keeps every label, the fit finds the temperature
that a model's overconfidence calls for, and a version serves what its metadata records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.calibration import CALIBRATION_RECORD, temperature_of, temperature_scaled
from app.config import Settings
from app.model_format import ModelLoadError
from app.models import load_model
from model import calibrate
from model.calibrate import fit_temperature
from model.uploads import CATEGORIES
from tests.conftest import COMMITTED_MODEL


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_temperature_scaling_keeps_the_label_and_moves_the_confidence():
    probabilities = softmax(np.random.default_rng(0).normal(0, 4, (200, 10)))
    softer = temperature_scaled(probabilities, 2.0)
    sharper = temperature_scaled(probabilities, 0.5)
    assert (softer.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (sharper.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    np.testing.assert_allclose(softer.sum(axis=1), 1, atol=1e-5)
    assert (softer.max(axis=1) < probabilities.max(axis=1) + 1e-7).all()
    assert (sharper.max(axis=1) > probabilities.max(axis=1) - 1e-7).all()
    assert temperature_scaled(probabilities, 1.0) is probabilities


def test_the_fit_finds_how_overconfident_a_model_is():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2.5, (20_000, 10))
    # Labels drawn from softmax(logits): a model answering softmax(1.8 * logits) is
    # overconfident by a temperature of 1.8, and one answering them as they are is calibrated.
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (rng.random((len(logits), 1)) > cumulative).sum(axis=1)
    assert fit_temperature(softmax(1.8 * logits), labels) == pytest.approx(1.8, rel=0.05)
    assert fit_temperature(softmax(logits), labels) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("record", [{}, {"temperature": 0}, {"temperature": "hot"}, []])
def test_an_unusable_calibration_record_is_refused(record: object):
    with pytest.raises(ModelLoadError, match="calibration"):
        temperature_of({CALIBRATION_RECORD: record})


def test_a_version_serves_the_temperature_it_records(tmp_path: Path, compile_cache_dir: Path):
    copy = tmp_path / "mnist" / COMMITTED_MODEL.name
    shutil.copytree(COMMITTED_MODEL, copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    settings = Settings(compile_cache_dir=compile_cache_dir)
    metadata[CALIBRATION_RECORD] = {"temperature": 3.0}
    (copy / "metadata.json").write_text(json.dumps(metadata))
    hot = load_model(copy, settings)
    del metadata[CALIBRATION_RECORD]
    (copy / "metadata.json").write_text(json.dumps(metadata))
    plain = load_model(copy, settings)
    assert (hot.temperature, plain.temperature) == (3.0, 1.0)

    images = list(np.random.default_rng(2).uniform(0, 255, (8, 28, 28)).astype(np.float32))
    own = plain.predict_batch(images)
    np.testing.assert_allclose(hot.predict_batch(images), temperature_scaled(own, 3.0), atol=1e-6)
    hot_answers, plain_answers = hot.answer_batch(images), plain.answer_batch(images)
    for hot_answer, plain_answer, row in zip(hot_answers, plain_answers, own, strict=True):
        np.testing.assert_allclose(
            hot_answer.probabilities, temperature_scaled(row[np.newaxis], 3.0)[0], atol=1e-6
        )
        # The detector reads the model's own answer, whatever the temperature.
        assert hot_answer.reason == plain_answer.reason
        assert hot_answer.digit_probability == pytest.approx(plain_answer.digit_probability)


def test_calibrating_a_version_records_a_fitted_temperature(tmp_path: Path, full_mnist: Path):
    copy = tmp_path / "mnist" / COMMITTED_MODEL.name
    shutil.copytree(COMMITTED_MODEL, copy)
    calibrate.main([str(copy), "--data", str(full_mnist), "--per-category", "3", "--workers", "1"])
    record = json.loads((copy / "metadata.json").read_text())[CALIBRATION_RECORD]
    uploads = 3 * len(CATEGORIES)  # Every one answered: none is blank.
    assert record["fitted_on"].startswith(f"{uploads} uploads of MNIST training digits held out")
    assert record["after"]["negative_log_likelihood"] <= record["before"]["negative_log_likelihood"]
    assert temperature_of({CALIBRATION_RECORD: record}) == record["temperature"]
