from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.model_format import PreprocessingProfile
from model.data import (
    DIGIT_CLASSES,
    IDX_FILES,
    DatasetError,
    load_arrays,
    load_dataset,
    load_image_folder,
    read_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        size.to_bytes(4, "big") for size in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 12).astype(np.uint8),
        "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 5).astype(np.uint8),
    }


def test_npz(tmp_path: Path, arrays):
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    x_train, y_train, x_test, y_test = load_arrays(path)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(x_test, arrays["x_test"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert y_train.dtype == np.int64


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_idx_folder(tmp_path: Path, arrays, compressed):
    for key, stem in IDX_FILES.items():
        data = idx_bytes(arrays[key])
        if compressed:
            (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / stem).write_bytes(data)
    x_train, y_train, x_test, y_test = load_arrays(tmp_path)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_train, arrays["y_train"])
    np.testing.assert_array_equal(x_test, arrays["x_test"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])


def test_load_dataset_mnist_from_file(tmp_path: Path, arrays):
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    dataset = load_dataset("mnist", path)
    assert dataset.class_names == DIGIT_CLASSES
    assert dataset.profile is PreprocessingProfile.MNIST
    assert load_dataset("fashion-mnist", path).profile is PreprocessingProfile.FIT


def test_missing_path_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_arrays(tmp_path / "nowhere.npz")


def test_npz_without_the_arrays(tmp_path: Path):
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(DatasetError, match="lacks the arrays"):
        load_arrays(path)


def test_not_an_npz(tmp_path: Path):
    path = tmp_path / "mnist.npz"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable"):
        load_arrays(path)


def test_wrong_image_shape(tmp_path: Path, arrays):
    arrays["x_train"] = np.zeros((12, 32, 32), np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=r"not \(N, 28, 28\)"):
        load_arrays(path)


def test_idx_folder_missing_a_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_arrays(tmp_path)


def test_truncated_idx_file(tmp_path: Path, arrays):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(arrays["x_test"])[:-10])
    with pytest.raises(DatasetError, match="promises"):
        read_idx(path)


def test_idx_file_with_a_bad_magic_number(tmp_path: Path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(path)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="Unknown dataset"):
        load_dataset("cifar")


def write_folder(root: Path, digits: np.ndarray, labels: np.ndarray, classes: dict[str, int]):
    for name, label in classes.items():
        (root / name).mkdir(parents=True)
        for index in np.flatnonzero(labels == label)[:10]:
            Image.fromarray(255 - digits[index]).save(root / name / f"{index}.png")


def test_image_folder_with_held_out_split(tmp_path: Path, digits):
    images, labels = digits
    write_folder(tmp_path, images, labels, {"one": 1, "seven": 7})
    dataset = load_image_folder(tmp_path, profile=PreprocessingProfile.MNIST, test_fraction=0.2)
    assert dataset.class_names == ["one", "seven"]
    assert len(dataset.x_train) == 16
    assert len(dataset.x_test) == 4
    assert sorted(np.bincount(dataset.y_test)) == [2, 2]
    # The same preprocessing as the service: dark-on-light files become light-on-dark digits.
    assert dataset.x_train.dtype == np.uint8
    assert dataset.x_train[:, 0, :].max() == 0
    assert dataset.x_train.max() > 200


def test_image_folder_with_train_and_test(tmp_path: Path, digits):
    images, labels = digits
    write_folder(tmp_path / "train", images, labels, {"a": 2, "b": 3})
    write_folder(tmp_path / "test", images, labels, {"a": 2, "b": 3})
    dataset = load_dataset(f"folder:{tmp_path}")
    assert dataset.profile is PreprocessingProfile.FIT
    assert len(dataset.x_train) == 20
    assert len(dataset.x_test) == 20


def test_image_folder_needs_two_classes(tmp_path: Path, digits):
    write_folder(tmp_path, *digits, {"only": 4})
    with pytest.raises(DatasetError, match="at least two"):
        load_image_folder(tmp_path)


def test_image_folder_with_an_empty_class(tmp_path: Path, digits):
    write_folder(tmp_path, *digits, {"x": 4})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_image_folder(tmp_path)


def test_image_folder_with_a_broken_image(tmp_path: Path, digits):
    write_folder(tmp_path, *digits, {"x": 4, "y": 5})
    (tmp_path / "x" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken\.png"):
        load_image_folder(tmp_path)


def test_not_a_folder(tmp_path: Path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_image_folder(tmp_path / "missing")
