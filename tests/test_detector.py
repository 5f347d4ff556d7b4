"""The detector of uploads that are not one digit: its numpy network is the Keras network it was
trained as, a broken detector keeps its version from loading, and the committed one tells a
printed letter and a written number from digits."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from app.config import Settings
from app.detector import DETECTOR_FILE, Reason, evidence, load_detector
from app.model_format import ModelLoadError
from app.models import LoadedModel, load_model
from app.preprocess import preprocess
from model.non_digits import FONTS, Split
from model.train_detector import build, to_litert
from tests.conftest import COMMITTED_MODEL
from tests.imaging import png, printed, written_number


def random_network(seed: int) -> keras.Model:
    network = build(10)
    rng = np.random.default_rng(seed)
    network.set_weights([rng.normal(0, 0.2, w.shape) for w in network.get_weights()])
    return network


def test_the_served_detector_computes_what_keras_trained(tmp_path: Path):
    network = random_network(0)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (16, 28, 28)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(10), 16).astype(np.float32)
    expected = network.predict([pixels[..., np.newaxis], evidence(probabilities)], verbose=0)

    flatbuffer = to_litert(network, 10, [pixels[..., np.newaxis], evidence(probabilities)])
    (tmp_path / DETECTOR_FILE).write_bytes(flatbuffer)
    described = {"threshold": 0.5, "sha256": hashlib.sha256(flatbuffer).hexdigest()}
    detector = load_detector(tmp_path, {"detector": described}, 10)
    assert detector is not None
    np.testing.assert_allclose(
        detector.class_probabilities(pixels, probabilities), expected, atol=1e-5
    )


def test_reasons_follow_the_threshold_and_the_likelier_class(served: LoadedModel):
    assert served.detector is not None
    low = served.detector.threshold / 2
    scores = np.array(
        [[0.9, 0.05, 0.05], [low, 0.7, 0.3 - low], [low, 0.1, 0.9 - low], [0.01, 0.98, 0.01]]
    )
    reasons = served.detector.reasons(scores)
    assert served.detector.threshold < 0.01
    assert reasons == [None, Reason.NOT_A_DIGIT, Reason.SEVERAL_DIGITS, None]


@pytest.fixture
def version_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "mnist" / COMMITTED_MODEL.name
    shutil.copytree(COMMITTED_MODEL, copy)
    return copy


def test_a_version_without_a_detector_is_served_unchecked(version_copy: Path, compile_cache_dir):
    metadata = json.loads((version_copy / "metadata.json").read_text())
    del metadata["detector"]
    (version_copy / "metadata.json").write_text(json.dumps(metadata))
    model = load_model(version_copy, Settings(compile_cache_dir=compile_cache_dir))
    assert model.detector is None
    [answer] = model.answer_batch([np.zeros((28, 28), np.float32)])
    assert answer.reason is None


@pytest.mark.parametrize("damage", ["missing", "changed", "not a flatbuffer", "bad threshold"])
def test_a_broken_detector_keeps_its_version_from_loading(
    version_copy: Path, compile_cache_dir, damage: str
):
    metadata = json.loads((version_copy / "metadata.json").read_text())
    if damage == "missing":
        (version_copy / DETECTOR_FILE).unlink()
    elif damage == "changed":
        with (version_copy / DETECTOR_FILE).open("ab") as detector:
            detector.write(b"\0")
    elif damage == "not a flatbuffer":
        garbage = b"not a model"
        (version_copy / DETECTOR_FILE).write_bytes(garbage)
        metadata["detector"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    else:
        metadata["detector"]["threshold"] = 1.5
    (version_copy / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match="detector"):
        load_model(version_copy, Settings(compile_cache_dir=compile_cache_dir))


@pytest.fixture(scope="module")
def served(compile_cache_dir) -> LoadedModel:
    return load_model(COMMITTED_MODEL, Settings(compile_cache_dir=compile_cache_dir))


def reasons_of(model: LoadedModel, uploads: list[bytes]) -> list[Reason | None]:
    inputs = [preprocess(data, model.profile) for data in uploads]
    return [answer.reason for answer in model.answer_batch(inputs)]


def test_printed_letters_are_not_digits(served: LoadedModel):
    # Fonts the detector never saw in training.
    uploads = [printed(letter, font) for letter in "AHKMRWx" for font in FONTS[Split.TEST][:3]]
    reasons = reasons_of(served, uploads)
    assert reasons.count(Reason.NOT_A_DIGIT) >= 0.9 * len(uploads), reasons


def test_numbers_written_side_by_side_are_several_digits(served: LoadedModel, digits):
    images, _ = digits
    numbers = [written_number(images[i : i + 2]) for i in range(0, 40, 2)]
    reasons = reasons_of(served, numbers)
    assert reasons.count(Reason.SEVERAL_DIGITS) >= 0.9 * len(numbers), reasons


def test_digits_are_digits(served: LoadedModel, digits):
    images, _ = digits
    reasons = reasons_of(served, [png(image) for image in images])
    assert sum(reason is not None for reason in reasons) <= 1
