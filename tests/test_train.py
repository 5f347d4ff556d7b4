from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.models import load_model, resolve_version_dir
from model import evaluate, train
from model.architectures import build_default, build_seed, inference_flops
from model.data import split_validation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    images, labels = digits
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(
        path, x_train=images[:240], y_train=labels[:240], x_test=images[240:], y_test=labels[240:]
    )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path) -> Path:
    out = tmp_path_factory.mktemp("export")
    return train.main(
        [
            "--data",
            str(tiny_npz),
            "--epochs",
            "1",
            "--validation-size",
            "40",
            "--rendered-uploads",
            "34",
            "--out",
            str(out),
            "--quiet",
        ]
    )


def test_export_uses_the_tf_serving_layout(exported: Path):
    assert exported.name == "1"
    assert exported.parent.name == "mnist"
    for name in (
        "saved_model.pb",
        "variables",
        "metadata.json",
        "training_curves.png",
        "confusion_matrix.png",
    ):
        assert (exported / name).exists(), name


def test_next_export_gets_the_next_version(exported: Path, tiny_npz: Path):
    second = train.main(
        [
            "--data",
            str(tiny_npz),
            "--arch",
            "seed",
            "--epochs",
            "1",
            "--validation-size",
            "0",
            "--out",
            str(exported.parent.parent),
            "--quiet",
        ]
    )
    assert second == exported.parent / "2"
    assert resolve_version_dir(exported.parent) == second


def test_metadata_describes_the_model(exported: Path):
    metadata = json.loads((exported / "metadata.json").read_text())
    assert metadata["name"] == "mnist"
    assert metadata["version"] == 1
    assert metadata["labels"] == [str(digit) for digit in range(10)]
    assert metadata["input"]["shape"] == [None, 28, 28, 1]
    assert metadata["input"]["pixel_range"] == [0, 255]
    assert metadata["preprocessing"] == "mnist"
    assert metadata["architecture"] == "default"
    # 200 digits, and 34 of them (two per kind of upload) rendered and preprocessed again.
    assert metadata["rendered_upload_images"] == 34
    assert metadata["train_images"] == 200 + 34
    assert metadata["validation_images"] == 40
    assert metadata["test_images"] == 60
    assert 0 <= metadata["test_accuracy"] <= 1
    assert metadata["parameters"] == build_default().count_params()
    for key in (
        "flops_per_image",
        "training_seconds",
        "created_at",
        "tensorflow_version",
        "keras_version",
        "command",
        "dataset",
        "seed",
    ):
        assert key in metadata, key


def test_every_export_is_checked_in_int8_on_its_test_split(exported: Path, compile_cache_dir: Path):
    record = json.loads((exported / "metadata.json").read_text())["litert_int8"]
    assert record["test_images"] == 60
    loss = record["reference_accuracy"] - record["test_accuracy"]
    assert record["passed"] == (loss <= 0.0005)
    assert (exported / "litert_int8.tflite").exists() == record["passed"]
    served = load_model(exported, Settings(compile_cache_dir=compile_cache_dir)).runtime
    assert served == ("litert-int8" if record["passed"] else "litert")


def test_saved_model_signature_and_determinism(exported: Path, digits, compile_cache_dir: Path):
    model = load_model(exported, Settings(compile_cache_dir=compile_cache_dir))
    images = [digit.astype(np.float32) for digit in digits[0][:5]]
    first = model.predict_batch(images)
    assert first.shape == (5, 10)
    np.testing.assert_allclose(first.sum(axis=1), 1, rtol=1e-5)
    # No augmentation or dropout may leak into serving: the same input gives the same output,
    # and an image's result does not depend on the rest of its batch.
    np.testing.assert_allclose(model.predict_batch(images), first, atol=1e-6)
    np.testing.assert_allclose(model.predict_batch(images[:1])[0], first[0], atol=1e-5)


def test_uploads_can_be_rendered_from_the_digits_training_held_out(
    exported: Path, tiny_npz: Path, capsys
):
    images, labels, described = evaluate.upload_digits(tiny_npz, "validation", exported)
    assert len(images) == len(labels) == 40  # --validation-size 40
    assert described == "MNIST training digits held out by version 1"
    with np.load(tiny_npz) as data:
        training, labels_of_training = data["x_train"], data["y_train"]
    # The split model.train made, from the size and seed in metadata.json.
    *_, held_out, _ = split_validation(training, labels_of_training, 40, 42)
    np.testing.assert_array_equal(images, held_out)
    uploads = ["--uploads", "--digits", "validation", "--categories", "mnist_png"]
    evaluate.main(
        [str(exported), "--data", str(tiny_npz), *uploads, "--per-category", "40", "--workers", "1"]
    )
    assert "40 images, 1 categories x 40 MNIST training digits held out" in capsys.readouterr().out
    # A model trained on other digits than these held out digits nobody can name.
    committed = resolve_version_dir(Settings().model_dir)
    with pytest.raises(SystemExit, match="which ones it held out is not known"):
        evaluate.upload_digits(tiny_npz, "validation", committed)


def test_evaluate_prints_a_report(exported: Path, tiny_npz: Path, capsys):
    accuracy = evaluate.main([str(exported), "--data", str(tiny_npz)])
    output = capsys.readouterr().out
    assert "Per class:" in output
    assert "Confusion matrix" in output
    metadata = json.loads((exported / "metadata.json").read_text())
    assert accuracy == pytest.approx(metadata["test_accuracy"], abs=1e-6)


def test_folder_dataset_trains_with_its_class_names(
    tmp_path: Path, digits, compile_cache_dir: Path
):
    images, labels = digits
    for name, label in {"circle": 0, "stick": 1}.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in np.flatnonzero(labels == label)[:12]:
            Image.fromarray(images[index]).save(tmp_path / "data" / name / f"{index}.png")
    exported = train.main(
        [
            "--dataset",
            f"folder:{tmp_path / 'data'}",
            "--profile",
            "mnist",
            "--arch",
            "seed",
            "--epochs",
            "1",
            "--validation-size",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    metadata = json.loads((exported / "metadata.json").read_text())
    assert exported.parent.name == "data"
    assert metadata["labels"] == ["circle", "stick"]
    assert metadata["preprocessing"] == "mnist"
    model = load_model(exported, Settings(compile_cache_dir=compile_cache_dir))
    assert model.predict_batch([images[0].astype(np.float32)]).shape == (1, 2)


def test_default_model_is_at_most_four_times_the_seed_flops():
    ratio = inference_flops(build_default()) / inference_flops(build_seed())
    assert 1 < ratio <= 4
