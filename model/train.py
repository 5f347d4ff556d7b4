"""Train a small CNN on 28x28 grayscale images and export it as a TensorFlow SavedModel.

    python -m model.train --data ../shared/data/mnist.npz            # our default CNN on MNIST
    python -m model.train --arch seed --data ../shared/data/mnist.npz
    python -m model.train --dataset folder:path/to/images            # one sub-folder per class

The export lands in `<out>/<name>/<version>/` (TensorFlow Serving's layout, version = next integer)
with `metadata.json`, the training curves and the confusion matrix beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from app.model_format import INPUT_NAME, INPUT_SHAPE, PreprocessingProfile
from model.architectures import ARCHITECTURES, PIXEL_SCALE, build_augmentation, inference_flops
from model.data import Dataset, load_dataset, split_validation
from model.quantize import quantise
from model.report import confusion_matrix, save_confusion_matrix, save_training_curves
from model.uploads import rendered_training_inputs

DEFAULT_OUT = Path(__file__).parent / "export"


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained."""

    epochs: int
    batch_size: int
    learning_rate: float
    cosine_decay: bool
    early_stopping_patience: int | None
    augment: bool
    # Epochs on un-augmented images at a small learning rate after the main run, so the batch
    # norm statistics and the last weights match clean digits again.
    clean_epochs: int = 0
    # Training digits rendered as realistic uploads (model.uploads) and passed through the
    # service's preprocessing, added to the training set: the model then sees what the service
    # will feed it, residual differences included. MNIST-style datasets only.
    rendered_uploads: int = 0


RECIPES = {
    # Exactly the seed: adam with its defaults, 10 epochs, batch 32.
    "seed": Recipe(
        epochs=10,
        batch_size=32,
        learning_rate=1e-3,
        cosine_decay=False,
        early_stopping_patience=None,
        augment=False,
    ),
    "default": Recipe(
        epochs=30,
        batch_size=128,
        learning_rate=3e-3,
        cosine_decay=True,
        early_stopping_patience=8,
        augment=True,
        clean_epochs=3,
        rendered_uploads=30_000,
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", default="mnist", help="mnist (default), fashion-mnist, or folder:PATH"
    )
    parser.add_argument(
        "--data", type=Path, help="local .npz file or folder of IDX files instead of downloading"
    )
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="default")
    parser.add_argument("--epochs", type=int, help="override the architecture's recipe")
    parser.add_argument("--batch-size", type=int, help="override the architecture's recipe")
    parser.add_argument(
        "--validation-size",
        type=float,
        default=5000,
        help="held-out training images: a count, or a fraction if < 1",
    )
    parser.add_argument("--limit", type=int, help="use only the first N training images")
    parser.add_argument(
        "--rendered-uploads",
        type=int,
        help="training digits rendered as uploads and preprocessed, added to the training set "
        "(default: the architecture's recipe; 0 for none)",
    )
    parser.add_argument(
        "--profile",
        choices=[p.value for p in PreprocessingProfile],
        help="preprocessing profile (folders default to fit)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="held-out test share for folders without a test/ sub-folder",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", help="model name (default: the dataset's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    profile = PreprocessingProfile(args.profile) if args.profile else None
    dataset = load_dataset(
        args.dataset, args.data, profile=profile, test_fraction=args.test_fraction, seed=args.seed
    )
    recipe = RECIPES[args.arch]
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    num_classes = len(dataset.class_names)

    x_train, y_train = dataset.x_train, dataset.y_train
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_train, y_train, x_val, y_val = split_validation(
        x_train, y_train, args.validation_size, args.seed
    )
    rendered = recipe.rendered_uploads if args.rendered_uploads is None else args.rendered_uploads
    rendered_count = 0
    if rendered and dataset.profile is PreprocessingProfile.MNIST:
        started = time.perf_counter()
        x_rendered, y_rendered = rendered_training_inputs(
            x_train, y_train, count=rendered, seed=args.seed, workers=os.cpu_count() or 1
        )
        x_train = np.concatenate([x_train, x_rendered])
        y_train = np.concatenate([y_train, y_rendered])
        rendered_count = len(x_rendered)
        print(
            f"Rendered {len(x_rendered)} training digits as uploads and preprocessed them in "
            f"{time.perf_counter() - started:.0f} s"
        )
    print(
        f"{dataset.name}: {len(x_train)} training, {len(x_val)} validation, "
        f"{len(dataset.x_test)} test images, {num_classes} classes"
    )

    model = ARCHITECTURES[args.arch](num_classes)
    # The augmentation runs in front of the model during training only; `model` shares the
    # weights and is what gets exported.
    trainer = (
        keras.Sequential([keras.Input(INPUT_SHAPE), build_augmentation(args.seed), model])
        if recipe.augment
        else model
    )
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = recipe.learning_rate
    if recipe.cosine_decay:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, steps, warmup_target=recipe.learning_rate, warmup_steps=steps // 20
        )
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary()
    callbacks: list[keras.callbacks.Callback] = []
    if recipe.early_stopping_patience and len(x_val):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=recipe.early_stopping_patience,
                restore_best_weights=True,
            )
        )

    inputs = as_model_input(x_train)
    targets = keras.utils.to_categorical(y_train, num_classes)
    validation = (
        (as_model_input(x_val), keras.utils.to_categorical(y_val, num_classes))
        if len(x_val)
        else None
    )
    verbose = 2 if args.quiet else 1
    started = time.perf_counter()
    history = trainer.fit(
        inputs,
        targets,
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        verbose=verbose,
    )
    if recipe.augment and recipe.clean_epochs:
        model.compile(
            optimizer=keras.optimizers.Adam(recipe.learning_rate / 30),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        clean = model.fit(
            inputs,
            targets,
            validation_data=validation,
            epochs=recipe.clean_epochs,
            batch_size=batch_size,
            verbose=verbose,
        )
        for key, values in clean.history.items():
            history.history.setdefault(key, []).extend(values)
    training_seconds = time.perf_counter() - started

    probabilities = model.predict(as_model_input(dataset.x_test), batch_size=512, verbose=0)
    predictions = probabilities.argmax(axis=1)
    test_accuracy = float((predictions == dataset.y_test).mean())

    export_dir = next_version_dir(args.out / (args.name or default_name(dataset)))
    # Written under a name the service ignores, then renamed into place at once: a running
    # service never sees a half-written version.
    staging = export_dir.with_name(f".{export_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    export_saved_model(model, staging)
    metadata = build_metadata(
        model=model,
        dataset=dataset,
        arch=args.arch,
        version=int(export_dir.name),
        test_accuracy=test_accuracy,
        training_seconds=training_seconds,
        epochs_run=len(history.history["loss"]),
        batch_size=batch_size,
        seed=args.seed,
        data_source=args.data,
        sizes=(len(x_train), len(x_val), len(dataset.x_test)),
        rendered_uploads=rendered_count,
        command="python -m model.train " + shlex.join(argv),
    )
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    int8 = quantise(staging, dataset.x_test, dataset.y_test)
    matrix = confusion_matrix(dataset.y_test, predictions, num_classes)
    save_training_curves(history.history, staging / "training_curves.png")
    save_confusion_matrix(matrix, dataset.class_names, staging / "confusion_matrix.png")
    os.rename(staging, export_dir)

    print(f"\nTest accuracy: {test_accuracy:.4f} on {len(dataset.x_test)} images")
    print(
        f"Parameters: {metadata['parameters']:,}; inference: "
        f"{inference_flops(model) / 1e6:.1f} MFLOPs per image"
    )
    print(f"Training time: {training_seconds:.0f} s for {metadata['epochs_run']} epochs")
    print(
        f"int8 weights: {int8.test_accuracy:.4f} (loss {int8.loss_points:.2f} points): "
        + ("served" if int8.passed else "over the limit, not written")
    )
    print(f"Exported to {export_dir}")
    return export_dir


def as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 255]; the model scales by itself."""
    return images.astype(np.float32)[..., np.newaxis]


def default_name(dataset: Dataset) -> str:
    return dataset.name.removeprefix("folder:").replace("/", "-")


def next_version_dir(model_dir: Path) -> Path:
    versions = [int(path.name) for path in model_dir.glob("*") if path.name.isdigit()]
    return model_dir / str(max(versions, default=0) + 1)


def export_saved_model(model: keras.Model, export_dir: Path) -> None:
    """A SavedModel whose `serving_default` maps float32 `image` (N, 28, 28, 1) to (N, classes)."""
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    model.export(
        str(export_dir),
        format="tf_saved_model",
        input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.float32, name=INPUT_NAME)],
        verbose=False,
    )


def build_metadata(
    *,
    model: keras.Model,
    dataset: Dataset,
    arch: str,
    version: int,
    test_accuracy: float,
    training_seconds: float,
    epochs_run: int,
    batch_size: int,
    seed: int,
    data_source: Path | None,
    sizes: tuple[int, int, int],
    rendered_uploads: int,
    command: str,
) -> dict[str, object]:
    return {
        "name": default_name(dataset),
        "version": version,
        "labels": dataset.class_names,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [None, *INPUT_SHAPE],
            "pixel_range": [0, 255],
            "polarity": "light ink on a dark background",
            "scaling": f"inside the model: x * {PIXEL_SCALE!r} (1/255)",
        },
        "output": {
            "dtype": "float32",
            "shape": [None, len(dataset.class_names)],
            "meaning": "class probabilities (softmax), in label order",
        },
        "preprocessing": dataset.profile.value,
        "architecture": arch,
        "parameters": int(model.count_params()),
        "flops_per_image": inference_flops(model),
        "dataset": dataset.name,
        "data_source": data_source.name if data_source else "keras.datasets download",
        "train_images": sizes[0],
        "rendered_upload_images": rendered_uploads,
        "validation_images": sizes[1],
        "test_images": sizes[2],
        "test_accuracy": round(test_accuracy, 6),
        "epochs_run": epochs_run,
        "batch_size": batch_size,
        "seed": seed,
        "training_seconds": round(training_seconds, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "command": command,
    }


if __name__ == "__main__":
    main()
