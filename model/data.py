"""Dataset loaders: Keras `.npz` files, IDX files, and folders of a user's own labelled images.

Every loader returns the same `Dataset`: uint8 (N, 28, 28) images, light ink on dark, with integer
labels, the class names and the preprocessing profile the service must apply to uploads.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import InvalidImageError
from app.model_format import PreprocessingProfile
from app.preprocess import preprocess

DIGIT_CLASSES = [str(digit) for digit in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    profile: PreprocessingProfile


class DatasetError(ValueError):
    """A dataset path or file that cannot be used, with a message saying why."""


def load_dataset(
    name: str,
    data_path: Path | None = None,
    *,
    profile: PreprocessingProfile | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """`name` is `mnist`, `fashion-mnist` or `folder:PATH`; `data_path` replaces the download."""
    if name.startswith("folder:"):
        return load_image_folder(
            Path(name.removeprefix("folder:")),
            profile=profile or PreprocessingProfile.FIT,
            test_fraction=test_fraction,
            seed=seed,
        )
    if name == "mnist":
        arrays = load_arrays(data_path) if data_path else _download("mnist")
        classes, default_profile = DIGIT_CLASSES, PreprocessingProfile.MNIST
    elif name == "fashion-mnist":
        arrays = load_arrays(data_path) if data_path else _download("fashion_mnist")
        classes, default_profile = FASHION_CLASSES, PreprocessingProfile.FIT
    else:
        raise DatasetError(f"Unknown dataset {name!r}: use mnist, fashion-mnist or folder:PATH.")
    return Dataset(name, *arrays, class_names=classes, profile=profile or default_profile)


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from a Keras `.npz` file or a folder of IDX files."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    arrays = _read_idx_folder(path) if path.is_dir() else _read_npz(path)
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetError(f"{path}: x_{split} has shape {images.shape}, not (N, 28, 28).")
        if labels.shape != (images.shape[0],):
            raise DatasetError(f"{path}: y_{split} does not match x_{split} in length.")
    return (
        arrays["x_train"].astype(np.uint8),
        arrays["y_train"].astype(np.int64),
        arrays["x_test"].astype(np.uint8),
        arrays["y_test"].astype(np.int64),
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = set(IDX_FILES) - set(archive.files)
            if missing:
                raise DatasetError(f"{path} lacks the arrays {sorted(missing)}.")
            return {key: archive[key] for key in IDX_FILES}
    except (OSError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{path} is not a readable .npz file: {error}") from None


def _read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        found = next((path for path in candidates if path.exists()), None)
        if found is None:
            raise DatasetError(f"{folder} has neither {stem} nor {stem}.gz.")
        arrays[key] = read_idx(found)
    return arrays


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): a big-endian header, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise DatasetError(f"{path} could not be read: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes.")
    dimensions = raw[3]
    header_size = 4 + 4 * dimensions
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header_size != expected:
        raise DatasetError(
            f"{path}: the header promises {expected} values, the file has {len(raw) - header_size}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _download(keras_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import keras

    module = getattr(keras.datasets, keras_name)
    (x_train, y_train), (x_test, y_test) = module.load_data()
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def load_image_folder(
    root: Path,
    *,
    profile: PreprocessingProfile = PreprocessingProfile.FIT,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """One sub-folder per class (`root/<class>/*.png`), or `root/train/<class>` + `root/test/...`.

    Images go through the service's own preprocessing. Without a test folder, a stratified
    `test_fraction` of each class is held out.
    """
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of class sub-folders.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_names = _class_names(root / "train")
        x_train, y_train = _read_class_folders(root / "train", class_names, profile)
        x_test, y_test = _read_class_folders(root / "test", class_names, profile)
    else:
        if not 0 < test_fraction < 1:
            raise DatasetError("test_fraction must be between 0 and 1.")
        class_names = _class_names(root)
        images, labels = _read_class_folders(root, class_names, profile)
        test_mask = _stratified_test_mask(labels, test_fraction, seed)
        x_train, y_train = images[~test_mask], labels[~test_mask]
        x_test, y_test = images[test_mask], labels[test_mask]
    return Dataset(f"folder:{root.name}", x_train, y_train, x_test, y_test, class_names, profile)


def _class_names(root: Path) -> list[str]:
    names = sorted(path.name for path in root.iterdir() if path.is_dir())
    if len(names) < 2:
        raise DatasetError(f"{root} needs at least two class sub-folders, found {len(names)}.")
    return names


def _read_class_folders(
    root: Path, class_names: list[str], profile: PreprocessingProfile
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{root / name} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        for path in files:
            try:
                pixels = preprocess(path.read_bytes(), profile)
            except InvalidImageError as error:
                raise DatasetError(f"{path}: {error}") from None
            images.append(np.round(pixels).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    mask = np.zeros(labels.shape, dtype=bool)
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        count = max(1, round(len(indices) * fraction)) if len(indices) > 1 else 0
        mask[generator.choice(indices, size=count, replace=False)] = True
    return mask


def split_validation(
    images: np.ndarray, labels: np.ndarray, size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    count = round(size * len(images)) if size < 1 else int(size)
    if not 0 <= count < len(images):
        raise ValueError(f"validation size {size} leaves no training images")
    order = np.random.default_rng(seed).permutation(len(images))
    validation, training = order[:count], order[count:]
    return images[training], labels[training], images[validation], labels[validation]
