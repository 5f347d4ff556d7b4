"""Evaluate an exported model: on its dataset's test split, or on realistic uploads.

    python -m model.evaluate model/export/mnist/1 --data ../shared/data/mnist.npz
    python -m model.evaluate --uploads --data ../shared/data/mnist.npz            # in-process
    python -m model.evaluate --uploads --data ../shared/data/mnist.npz --url http://127.0.0.1:8000

The first prints the overall and per-class accuracy and the confusion matrix of the SavedModel's
signature. `--uploads` renders MNIST test digits as people upload them (`model.uploads`) and
prints the accuracy per kind of upload and the worst confusions: in-process through
`app/preprocess.py` and the model as the service runs it, or over HTTP against a running service
(`--url`). `--failures sheet.png` draws what went wrong. `--digits validation` renders the
training digits the model held out instead of the test digits: a second, independent sample.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from app import tensorflow_runtime
from app.config import Settings
from app.detector import DIGIT
from app.model_format import labels_of, profile_of, read_metadata
from app.models import LoadedModel, load_model, resolve_version_dir
from model import non_digit_scores, non_digits, upload_scores
from model.data import load_dataset, split_validation
from model.report import confusion_matrix, format_report
from model.uploads import CATEGORIES, encode, generate

BATCH_SIZE = 1000
DEFAULT_PER_CATEGORY = 500


def predict(model_dir: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities from the SavedModel's serving signature, for uint8 (N, 28, 28)."""
    serve, _ = tensorflow_runtime.load_signature(
        model_dir, len(labels_of(read_metadata(model_dir)))
    )
    batches = [
        serve(images[start : start + BATCH_SIZE].astype(np.float32)[..., np.newaxis])
        for start in range(0, len(images), BATCH_SIZE)
    ]
    return np.concatenate(batches)


def evaluate_test_split(model_dir: Path, data: Path | None, dataset_name: str | None) -> float:
    metadata = read_metadata(model_dir)
    labels = labels_of(metadata)
    dataset = load_dataset(
        dataset_name or metadata["dataset"],
        data,
        profile=profile_of(metadata),
        seed=metadata.get("seed", 0),
    )
    probabilities = predict(model_dir, dataset.x_test)
    matrix = confusion_matrix(dataset.y_test, probabilities.argmax(axis=1), len(labels))
    print(f"Model: {metadata['name']} version {metadata['version']} ({model_dir})")
    print(f"Test set: {dataset.name}, {len(dataset.x_test)} images\n")
    print(format_report(matrix, labels))
    return float(np.trace(matrix) / matrix.sum())


def upload_digits(data: Path, split: str, model_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The digits to render as uploads: the official test split, or the training digits the
    model held out for validation (never trained on, and not the test digits)."""
    with np.load(data) as arrays:
        if split == "test":
            return arrays["x_test"], arrays["y_test"], "MNIST test digits"
        if "x_train" not in arrays.files:
            raise SystemExit(f"--digits validation needs the training digits (x_train) in {data}")
        metadata = read_metadata(model_dir)
        training, training_labels = arrays["x_train"], arrays["y_train"]
        trained = metadata["train_images"] - metadata.get("rendered_upload_images", 0)
        if trained + metadata["validation_images"] != len(training):
            raise SystemExit(
                f"{model_dir} was not trained on all {len(training)} training digits of {data}: "
                "which ones it held out is not known"
            )
        *_, images, labels = split_validation(
            training, training_labels, metadata["validation_images"], metadata["seed"]
        )
    return images, labels, f"MNIST training digits held out by version {metadata['version']}"


def scored_where(args: argparse.Namespace) -> tuple[str, LoadedModel | None]:
    """Where uploads are scored, said for the report: a running service (`--url`; no model
    here), or the model loaded in this process."""
    if args.url:
        return f"over HTTP: {args.url}/predict", None
    model = load_model(args.model_dir, Settings())
    where = f"in-process: app/preprocess.py + {model.name} v{model.version} ({model.runtime})"
    return where, model


def evaluate_uploads(args: argparse.Namespace) -> dict[str, float]:
    if args.data is None:
        raise SystemExit("--uploads needs --data: an MNIST .npz whose x_test digits are rendered")
    images, labels, digits = upload_digits(args.data, args.digits, args.model_dir)
    categories = args.categories.split(",") if args.categories else list(CATEGORIES)
    started = time.perf_counter()
    uploads = generate(
        images,
        labels,
        per_category=args.per_category,
        categories=categories,
        seed=args.seed,
        workers=args.workers,
    )
    where, model = scored_where(args)
    if model is None:
        outcomes = upload_scores.score_over_http(args.url, uploads)
    else:
        # Scored as they are rendered: every test digit as every kind is gigabytes of images.
        outcomes = upload_scores.score_in_process(model, uploads)
    print(
        f"Realistic uploads: {len(outcomes)} images, {len(categories)} categories x "
        f"{len(outcomes) // len(categories)} {digits}, seed {args.seed}; {where}"
    )
    print(f"(rendered and scored in {time.perf_counter() - started:.0f} s)\n")
    print(upload_scores.format_report(outcomes))
    if args.failures:
        count = upload_scores.save_contact_sheet(outcomes, args.failures)
        print(f"\nContact sheet of {count} failures: {args.failures}")
    if args.reliability:
        upload_scores.save_reliability_diagram(outcomes, args.reliability)
        print(f"Reliability diagram: {args.reliability}")
    return {
        category: right / total
        for category, (right, total) in upload_scores.accuracy_by_category(outcomes).items()
    }


def evaluate_non_digits(args: argparse.Namespace) -> dict[str, float]:
    """The detector on non-digits (the test split of `model.non_digits`) and on digits (the
    realistic uploads of test digits, and the official test set as PNGs)."""
    if args.data is None:
        raise SystemExit("--non-digits needs --data: an MNIST .npz (x_test) to write numbers with")
    with np.load(args.data) as arrays:
        images, labels = arrays["x_test"], arrays["y_test"]
    started = time.perf_counter()
    odd = non_digits.generate(
        args.per_kind, non_digits.Split.TEST, digits=images, seed=args.seed, workers=args.workers
    )
    odd_items = ((u.kind, u.reason, u.data, u.extension) for u in odd)
    categories = args.categories.split(",") if args.categories else list(CATEGORIES)
    digit_uploads = generate(
        images,
        labels,
        per_category=args.per_category,
        categories=categories,
        seed=args.seed,
        workers=args.workers,
        own_digits=True,
    )
    digit_items = ((u.category, DIGIT, u.data, u.extension) for u in digit_uploads)
    official = (
        ("test digit", DIGIT, encode(Image.fromarray(image), "PNG"), "png") for image in images
    )
    where, model = scored_where(args)
    score = (
        functools.partial(non_digit_scores.score_over_http, args.url)
        if model is None
        else functools.partial(non_digit_scores.score_in_process, model)
    )
    odd_verdicts, digit_verdicts, official_verdicts = (
        score(odd_items),
        score(digit_items),
        score(official),
    )
    print(
        f"Not one digit: {len(odd_verdicts)} uploads, {args.per_kind} of each kind "
        f"(model.non_digits, test split: fonts, photos, digits and seeds not trained on), and "
        f"{len(digit_verdicts)} digit uploads ({len(categories)} categories x {args.per_category} "
        f"MNIST test digits, a sample of its own for each), seed {args.seed}; {where}"
    )
    print(f"(rendered and scored in {time.perf_counter() - started:.0f} s)\n")
    print(non_digit_scores.format_report(odd_verdicts, digit_verdicts))
    official_flagged = sum(verdict.flagged for verdict in official_verdicts)
    print(
        f"\nOfficial MNIST test set, as 28x28 PNG uploads: {official_flagged} of "
        f"{len(official_verdicts)} flagged ({official_flagged / len(official_verdicts):.2%})"
    )
    return {"official_flagged": official_flagged / len(official_verdicts)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model_dir",
        type=Path,
        nargs="?",
        help="an export such as model/export/mnist/1 (default: the newest committed version)",
    )
    parser.add_argument("--data", type=Path, help="local .npz file or IDX folder")
    parser.add_argument("--dataset", help="override the dataset named in metadata.json")
    uploads = parser.add_argument_group("realistic uploads")
    uploads.add_argument("--uploads", action="store_true", help="score realistic uploads")
    uploads.add_argument("--per-category", type=int, default=DEFAULT_PER_CATEGORY)
    uploads.add_argument("--categories", help=f"comma-separated, of: {', '.join(CATEGORIES)}")
    uploads.add_argument(
        "--digits",
        choices=["test", "validation"],
        default="test",
        help="render the official test digits (default) or the training digits the model held "
        "out for validation",
    )
    uploads.add_argument("--seed", type=int, default=0)
    uploads.add_argument(
        "--non-digits",
        action="store_true",
        help="score the detector of uploads that are not one digit (model.non_digits), and "
        "its false flags on digit uploads (--per-category of each) and the official test set",
    )
    uploads.add_argument("--per-kind", type=int, default=300, help="non-digits of each kind")
    uploads.add_argument(
        "--url", help="score a running service instead, e.g. http://127.0.0.1:8000"
    )
    uploads.add_argument("--failures", type=Path, help="write a contact sheet of failures (PNG)")
    uploads.add_argument(
        "--reliability", type=Path, help="draw the reliability diagram of `confidence` (PNG)"
    )
    uploads.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes rendering uploads"
    )
    args = parser.parse_args(argv)
    if args.model_dir is None:
        args.model_dir = resolve_version_dir(Settings().model_dir)
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    if args.non_digits:
        return evaluate_non_digits(args)["official_flagged"]
    if args.uploads:
        accuracies = evaluate_uploads(args)
        return min(accuracies.values())
    return evaluate_test_split(args.model_dir, args.data, args.dataset)


if __name__ == "__main__":
    main()
