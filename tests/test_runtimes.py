"""LiteRT compiled from the SavedModel: same answers as TensorFlow, safe across threads, and a
fallback to TensorFlow whenever it cannot be trusted."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app import runtimes
from app.models import LoadedModel, load_model
from app.runtimes import Runtime
from tests.conftest import COMMITTED_MODEL


@pytest.fixture(scope="module")
def litert_model() -> LoadedModel:
    return load_model(COMMITTED_MODEL, Runtime.LITERT)


@pytest.fixture(scope="module")
def tensorflow_model() -> LoadedModel:
    return load_model(COMMITTED_MODEL, Runtime.TENSORFLOW)


def test_litert_is_the_default_and_matches_tensorflow(litert_model, tensorflow_model, digits):
    images, labels = digits
    assert litert_model.runtime is Runtime.LITERT
    assert tensorflow_model.runtime is Runtime.TENSORFLOW
    batch = list(images.astype(np.float32))
    ours, reference = litert_model.predict_batch(batch), tensorflow_model.predict_batch(batch)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    assert np.mean(ours.argmax(axis=1) == labels) >= 0.99


def test_every_batch_size_gives_the_same_rows(litert_model, digits):
    images = list(digits[0][:40].astype(np.float32))
    whole = litert_model.predict_batch(images)
    for size in (1, 3, 17, 40):
        np.testing.assert_allclose(
            litert_model.predict_batch(images[:size]), whole[:size], atol=1e-6
        )


def test_concurrent_callers_each_get_their_own_rows(litert_model, digits):
    images = digits[0].astype(np.float32)
    expected = litert_model.predict_batch(list(images))

    def predict(start: int) -> tuple[int, np.ndarray]:
        size = 1 + start % 7
        return start, litert_model.predict_batch(list(images[start : start + size]))

    with ThreadPoolExecutor(8) as pool:
        for start, rows in pool.map(predict, range(0, 280, 3)):
            np.testing.assert_allclose(rows, expected[start : start + len(rows)], atol=1e-6)


def test_a_failed_conversion_falls_back_to_tensorflow(monkeypatch, caplog, digits):
    def fail(*_: object) -> bytes:
        raise ValueError("op not supported")

    monkeypatch.setattr(runtimes, "compile_litert", fail)
    with caplog.at_level(logging.WARNING, logger="app.runtimes"):
        model = load_model(COMMITTED_MODEL, Runtime.LITERT)
    assert model.runtime is Runtime.TENSORFLOW
    assert "op not supported" in caplog.text
    assert model.predict_batch([digits[0][0].astype(np.float32)]).argmax() == digits[1][0]


def test_a_conversion_that_changes_the_outputs_is_not_used(monkeypatch, caplog):
    run = runtimes.LiteRTRunner.__call__
    monkeypatch.setattr(
        runtimes.LiteRTRunner, "__call__", lambda self, batch: run(self, batch)[:, ::-1]
    )
    with caplog.at_level(logging.WARNING, logger="app.runtimes"):
        model = load_model(COMMITTED_MODEL, Runtime.LITERT)
    assert model.runtime is Runtime.TENSORFLOW
    assert "differ from TensorFlow's" in caplog.text
