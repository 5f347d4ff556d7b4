"""Train a version's non-digit detector (`app/detector.py`) and write it beside the SavedModel.

    python -m model.train_detector --data ../shared/data/mnist.npz    # the newest version

Digits are the training digits the model held out for validation (never trained on, so the
model's confidence on them is what it will be on new uploads), as they are and rendered as
uploads (`model.uploads`), and more training digits as they are; non-digits are the `train`
split of `model.non_digits` (its own fonts, photos and seeds; numbers written with training
digits). Every upload goes through the service's preprocessing and the served model, exactly as
a request would. A fifth of the digits is held
out, and the threshold is set so that at most `--false-flags` of them would be flagged.
`python -m model.evaluate --non-digits` scores the result on the `test` split.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from app.config import Settings
from app.detector import (
    CLASSES,
    CONV_FILTERS,
    DENSE_UNITS,
    DETECTOR_FILE,
    EVIDENCE_INPUT,
    IMAGE_INPUT,
    OUTPUT,
    Detector,
    Reason,
    evidence,
)
from app.errors import ServiceError
from app.litert_runtime import AGREEMENT_ATOL
from app.model_format import INPUT_SIDE, PreprocessingProfile
from app.models import LoadedModel, load_model, resolve_version_dir
from app.preprocess import preprocess
from model import non_digits
from model.architectures import PIXEL_SCALE
from model.data import split_validation
from model.evaluate import upload_digits
from model.records import record_in_metadata, write_atomically
from model.uploads import encode, rendered_training_inputs

HELD_OUT = 0.2
MAX_INT8_DISAGREEMENT = 0.001
BATCH = 256


def model_inputs(uploads: Iterable[bytes], profile: PreprocessingProfile) -> np.ndarray:
    """What the model would be fed for each upload the service accepts, (N, 28, 28) uint8."""
    inputs = []
    for data in uploads:
        try:
            inputs.append(np.round(preprocess(data, profile)).astype(np.uint8))
        except ServiceError:
            continue  # Refused (blank, say): the service never asks the detector.
    return np.stack(inputs)


def digit_inputs(
    images: np.ndarray,
    labels: np.ndarray,
    model: LoadedModel,
    renderings: int,
    seed: int,
    workers: int,
) -> np.ndarray:
    """The digits as sent (PNG) and `renderings` of them as other kinds of upload."""
    plain = model_inputs((encode(Image.fromarray(image), "PNG") for image in images), model.profile)
    rendered, _ = rendered_training_inputs(
        images, labels, count=renderings, seed=seed, workers=workers
    )
    return np.concatenate([plain, rendered])


def evidence_of(model: LoadedModel, inputs: np.ndarray) -> np.ndarray:
    """The detector's second input: what the model answers for each input."""
    return evidence(
        np.concatenate(
            [
                model.model_batch(list(inputs[start : start + BATCH].astype(np.float32)))
                for start in range(0, len(inputs), BATCH)
            ]
        )
    )


def build(classes: int) -> keras.Model:
    """The layers of `app.detector.Detector`, in Keras."""
    image = keras.Input((INPUT_SIDE, INPUT_SIDE, 1), name=IMAGE_INPUT)
    probabilities = keras.Input((classes,), name=EVIDENCE_INPUT)
    found = keras.layers.Rescaling(PIXEL_SCALE)(image)
    for filters in CONV_FILTERS:
        found = keras.layers.Conv2D(filters, 3, activation="relu")(found)
        found = keras.layers.MaxPooling2D(2)(found)
    hidden = keras.layers.Concatenate()([keras.layers.Flatten()(found), probabilities])
    for units in DENSE_UNITS:
        hidden = keras.layers.Dropout(0.2)(keras.layers.Dense(units, activation="relu")(hidden))
    output = keras.layers.Dense(len(CLASSES), activation="softmax")(hidden)
    network = keras.Model([image, probabilities], output)
    network.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return network


def to_litert(
    network: keras.Model, classes: int, probe: list[np.ndarray], *, int8_weights: bool = False
) -> bytes:
    """The network as a LiteRT flatbuffer (via a SavedModel). In float32 it must give Keras's
    probabilities on `probe`; with int8 weights (dynamic-range quantisation, about three times
    faster on CPUs) the same class for all but `MAX_INT8_DISAGREEMENT` of `probe`."""
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(network)
        archive.add_endpoint(
            "serving_default",
            lambda image, evidence: {OUTPUT: network([image, evidence], training=False)},
            input_signature=[
                tf.TensorSpec([None, INPUT_SIDE, INPUT_SIDE, 1], tf.float32, name=IMAGE_INPUT),
                tf.TensorSpec([None, classes], tf.float32, name=EVIDENCE_INPUT),
            ],
        )
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if int8_weights:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = bytes(converter.convert())
    image, model_evidence = probe
    expected = network.predict(probe, verbose=0)
    got = Detector(flatbuffer, 0.5).run(image[..., 0], model_evidence)
    if int8_weights:
        disagreement = float((got.argmax(axis=1) != expected.argmax(axis=1)).mean())
        if disagreement > MAX_INT8_DISAGREEMENT:
            raise SystemExit(f"int8 weights change the class of {disagreement:.2%} of the probe")
        return flatbuffer
    difference = float(np.abs(got - expected).max())
    if difference > AGREEMENT_ATOL:
        raise SystemExit(f"LiteRT's detector differs from Keras's by {difference:.2g}")
    return flatbuffer


def training_inputs(
    args: argparse.Namespace, model: LoadedModel, images: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """Model inputs of digits to fit, of held-out digits, and of each kind of non-digit."""
    order = np.random.default_rng(args.seed).permutation(len(images))
    held = order[: round(HELD_OUT * len(images))]
    fit = order[len(held) :]
    renderings_held = round(HELD_OUT * args.renderings)
    inputs = {
        "fit_digits": digit_inputs(
            images[fit],
            labels[fit],
            model,
            args.renderings - renderings_held,
            args.seed,
            args.workers,
        ),
        "held_digits": digit_inputs(
            images[held], labels[held], model, renderings_held, args.seed + 1, args.workers
        ),
    }
    with np.load(args.data) as arrays:
        training_digits = arrays["x_train"]
    # More digits to fit, as sent: ones the model trained on (far more shapes of each digit
    # than the held-out ones alone).
    trained, *_ = split_validation(
        training_digits,
        np.zeros(len(training_digits)),
        model.metadata["validation_images"],
        model.metadata["seed"],
    )
    chosen = np.random.default_rng(args.seed).choice(len(trained), args.trained_digits, False)
    inputs["fit_digits"] = np.concatenate(
        [
            inputs["fit_digits"],
            model_inputs(
                (encode(Image.fromarray(trained[i]), "PNG") for i in chosen), model.profile
            ),
        ]
    )
    negatives: dict[str, list[np.ndarray]] = {reason: [] for reason in Reason}
    for upload in non_digits.generate(
        args.per_kind,
        non_digits.Split.TRAIN,
        digits=training_digits,
        seed=args.seed,
        workers=args.workers,
    ):
        try:
            pixels = np.round(preprocess(upload.data, model.profile)).astype(np.uint8)
        except ServiceError:
            continue  # Refused (blank, say): the service never asks the detector.
        negatives[upload.reason].append(pixels)
    return inputs | {reason: np.stack(group) for reason, group in negatives.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("--data", type=Path, required=True, help="MNIST .npz with x_train")
    parser.add_argument("--per-kind", type=int, default=4000, help="non-digits of each kind")
    parser.add_argument(
        "--renderings", type=int, default=24000, help="held-out digits rendered as uploads"
    )
    parser.add_argument(
        "--trained-digits", type=int, default=30000, help="digits the model trained on, as sent"
    )
    parser.add_argument("--false-flags", type=float, default=0.005)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--inputs-cache", type=Path, help="keep the rendered inputs here (.npz) for another run"
    )
    args = parser.parse_args(argv)
    model_dir = args.model_dir or resolve_version_dir(Settings().model_dir)
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    model = load_model(model_dir, Settings())
    images, labels, digits_name = upload_digits(args.data, "validation", model_dir)
    if args.inputs_cache and args.inputs_cache.exists():
        with np.load(args.inputs_cache) as cached:
            rendered = {name: cached[name] for name in cached.files}
    else:
        rendered = training_inputs(args, model, images, labels)
        if args.inputs_cache:
            np.savez_compressed(args.inputs_cache, **rendered)
    fit_digits, held_digits = rendered["fit_digits"], rendered["held_digits"]
    negatives = {reason: rendered[reason] for reason in Reason}
    print(
        f"digits: {len(fit_digits)} to fit, {len(held_digits)} held out ({digits_name}); "
        f"non-digits: {len(negatives[Reason.NOT_A_DIGIT])} not a digit, "
        f"{len(negatives[Reason.SEVERAL_DIGITS])} several digits "
        f"({time.perf_counter() - started:.0f} s to render and preprocess)",
        flush=True,
    )

    groups = [fit_digits, *negatives.values()]
    inputs = np.concatenate(groups)
    targets = np.concatenate([np.full(len(group), number) for number, group in enumerate(groups)])
    x = [inputs[..., np.newaxis].astype(np.float32), evidence_of(model, inputs)]
    weights = {
        number: len(targets) / (len(groups) * len(group)) for number, group in enumerate(groups)
    }
    network = build(len(model.labels))
    network.fit(
        x,
        targets,
        batch_size=128,
        epochs=args.epochs,
        class_weight=weights,
        verbose=0,
        shuffle=True,
    )
    held_x = [held_digits[..., np.newaxis].astype(np.float32), evidence_of(model, held_digits)]
    to_litert(network, len(model.labels), held_x)  # Float32 matches Keras: the export is right.
    flatbuffer = to_litert(network, len(model.labels), held_x, int8_weights=True)
    # The threshold comes from the served flatbuffer's scores, not Keras's.
    held_scores = Detector(flatbuffer, 0.5).run(held_digits, held_x[1])[:, 0]
    threshold = float(min(0.5, np.quantile(held_scores, args.false_flags)))
    flagged_held = float((held_scores < threshold).mean())
    path = model_dir / DETECTOR_FILE
    write_atomically(path, flatbuffer)
    record_in_metadata(
        model_dir,
        "detector",
        {
            "file": DETECTOR_FILE,
            "sha256": hashlib.sha256(flatbuffer).hexdigest(),
            "classes": list(CLASSES),
            "input": "the model's 28x28 input / 255, and its log-probabilities / 10",
            "weights": "int8 (dynamic-range quantisation), checked against float32 Keras",
            "layers": {"convolutions": list(CONV_FILTERS), "dense": [*DENSE_UNITS, len(CLASSES)]},
            "threshold": round(threshold, 6),
            "meaning": "not a digit when P(digit) < threshold; then the likelier other class",
            "digits": f"{digits_name}, as sent and rendered, and {args.trained_digits} digits it "
            f"trained on: {len(fit_digits)} inputs to fit",
            "non_digits": {reason.value: len(group) for reason, group in negatives.items()},
            "held_out_digits": len(held_digits),
            "held_out_digits_flagged": round(flagged_held, 5),
            "epochs": args.epochs,
            "seed": args.seed,
            "training_seconds": round(time.perf_counter() - started, 1),
            "command": "python -m model.train_detector " + shlex.join(sys.argv[1:]),
        },
    )
    print(
        f"threshold {threshold:.4f}: {flagged_held:.2%} of {len(held_digits)} held-out digits "
        f"flagged; wrote {path} ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
