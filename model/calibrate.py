"""Fit the temperature that makes a version's `confidence` mean what it says (`app.calibration`).

    python -m model.calibrate --data ../shared/data/mnist.npz     # the newest version

The temperature is fitted on the training digits the model held out for validation (never
trained on, and never the test digits), rendered as every category of realistic upload
(`model.uploads`) and sent through the service's preprocessing and model: the one value that
minimises the negative log-likelihood of their labels. It is recorded in the version's
`metadata.json` with the figures before and after; `python -m model.evaluate --uploads
--reliability PATH` then scores it on uploads of the official test digits.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from app.calibration import CALIBRATION_RECORD, temperature_scaled
from app.config import Settings
from app.models import load_model, resolve_version_dir
from model.evaluate import upload_digits
from model.records import record_in_metadata
from model.upload_scores import CALIBRATION_BINS, calibration_error, score_in_process
from model.uploads import CATEGORIES, generate

# Probabilities of exactly zero have no logarithm; far below anything a confidence shows.
LOG_FLOOR = 1e-30
# Far wider than any temperature a classifier needs; the fit is bounded so it always ends.
TEMPERATURE_RANGE = (0.05, 20.0)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    chosen = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(chosen, LOG_FLOOR)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature under which the model's probabilities best predict `labels`."""
    fitted = minimize_scalar(
        lambda temperature: negative_log_likelihood(
            temperature_scaled(probabilities, temperature), labels
        ),
        bounds=TEMPERATURE_RANGE,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(fitted.x)


def figures(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    confidence = probabilities.max(axis=1).astype(np.float64)
    right = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    return {
        "negative_log_likelihood": round(negative_log_likelihood(probabilities, labels), 5),
        "expected_calibration_error": round(calibration_error(confidence, right), 5),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("--data", type=Path, required=True, help="MNIST .npz with x_train")
    parser.add_argument("--per-category", type=int, default=500, help="uploads of each category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    model_dir = args.model_dir or resolve_version_dir(Settings().model_dir)
    started = time.perf_counter()

    model = load_model(model_dir, Settings(non_digits="off"))
    images, labels, digits_name = upload_digits(args.data, "validation", model_dir)
    outcomes = score_in_process(
        model,
        generate(
            images,
            labels,
            per_category=args.per_category,
            categories=list(CATEGORIES),
            seed=args.seed,
            workers=args.workers,
        ),
    )
    answered = [
        (outcome.model_probabilities, outcome.upload.label)
        for outcome in outcomes
        if outcome.model_probabilities is not None
    ]
    probabilities = np.stack([row for row, _ in answered])
    truth = np.array([label for _, label in answered])
    temperature = fit_temperature(probabilities, truth)
    before = figures(probabilities, truth)
    after = figures(temperature_scaled(probabilities, temperature), truth)
    record_in_metadata(
        model_dir,
        CALIBRATION_RECORD,
        {
            "method": "temperature scaling: softmax(log(p) / temperature)",
            "temperature": round(temperature, 4),
            "fitted_on": f"{len(answered)} uploads of {digits_name} ({len(CATEGORIES)} "
            f"categories of model.uploads, {args.per_category} each, seed {args.seed})",
            "bins": CALIBRATION_BINS,
            "before": before,
            "after": after,
            "command": "python -m model.calibrate " + shlex.join(sys.argv[1:]),
        },
    )
    print(
        f"temperature {temperature:.4f}, fitted on {len(answered)} uploads of {digits_name}: "
        f"negative log-likelihood {before['negative_log_likelihood']:.4f} -> "
        f"{after['negative_log_likelihood']:.4f}, expected calibration error "
        f"{100 * before['expected_calibration_error']:.2f} % -> "
        f"{100 * after['expected_calibration_error']:.2f} %; recorded in "
        f"{model_dir}/metadata.json ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
