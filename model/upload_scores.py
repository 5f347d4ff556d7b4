"""Score a model on realistic uploads (`model.uploads`), per category, and show the failures.

In-process, each upload goes through `app.preprocess` and the model as the service runs it;
over HTTP, through a running service's `POST /predict?explain=true`. Both give one `Outcome` per
upload, so the same report and contact sheet come out of either.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from app.calibration import temperature_scaled
from app.errors import ServiceError
from app.models import LoadedModel
from app.preprocess import preprocess
from cnn_serve.retrying import RetryAfterAsyncTransport
from model.uploads import CONTENT_TYPES, Upload

BATCH_SIZE = 256
HTTP_CONCURRENCY = 16


@dataclass(frozen=True)
class Outcome:
    upload: Upload
    predicted: str  # A label, or the error code the upload was refused with.
    model_input: np.ndarray | None  # The 28x28 input the model saw, when known.
    confidence: float | None = None  # The answer's `confidence`; None when refused.
    # The model's own probabilities, before calibration: known in-process only.
    model_probabilities: np.ndarray | None = None

    @property
    def right(self) -> bool:
        return self.predicted == str(self.upload.label)


def score_in_process(model: LoadedModel, uploads: Iterable[Upload]) -> list[Outcome]:
    """Every upload scored, as `uploads` yields them; only failures keep their bytes."""
    outcomes: list[Outcome] = []
    pending: list[tuple[Upload, np.ndarray]] = []

    def flush() -> None:
        if pending:
            own = model.model_batch([pixels for _, pixels in pending])
            served = temperature_scaled(own, model.temperature)
            for (upload, pixels), row, own_row in zip(pending, served, own, strict=True):
                best = int(row.argmax())
                outcome = Outcome(upload, model.labels[best], pixels, float(row[best]), own_row)
                if outcome.right:
                    # Only failures are drawn: dropping the others' bytes keeps memory flat
                    # when every test digit is rendered as every kind of upload.
                    outcome = replace(outcome, upload=replace(upload, data=b""))
                outcomes.append(outcome)
            pending.clear()

    for upload in uploads:
        try:
            pending.append((upload, preprocess(upload.data, model.profile)))
        except ServiceError as error:
            outcomes.append(Outcome(upload, error.code, None))
        if len(pending) >= BATCH_SIZE:
            flush()
    flush()
    return outcomes


def score_over_http(url: str, uploads: Iterable[Upload]) -> list[Outcome]:
    return asyncio.run(_score_over_http(url, list(uploads)))


async def _score_over_http(url: str, uploads: list[Upload]) -> list[Outcome]:
    limit = asyncio.Semaphore(HTTP_CONCURRENCY)
    transport = RetryAfterAsyncTransport()
    async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as client:

        async def score(upload: Upload) -> Outcome:
            async with limit:
                response = await client.post(
                    "/predict",
                    params={"explain": "true"},
                    content=upload.data,
                    headers={"content-type": CONTENT_TYPES[upload.extension]},
                )
            body = response.json()
            if response.status_code != 200:
                return Outcome(upload, body["error"]["code"], None)
            explanation = body.get("explain") or {}
            model_input = None
            if "input_png" in explanation:
                png = base64.b64decode(explanation["input_png"])
                model_input = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32)
            return Outcome(upload, body["label"], model_input, float(body["confidence"]))

        return list(await asyncio.gather(*(score(upload) for upload in uploads)))


def accuracy_by_category(outcomes: Sequence[Outcome]) -> dict[str, tuple[int, int]]:
    """category -> (right, total), in the order the categories first appear."""
    counts: dict[str, list[int]] = {}
    for outcome in outcomes:
        right_total = counts.setdefault(outcome.upload.category, [0, 0])
        right_total[0] += outcome.right
        right_total[1] += 1
    return {category: (right, total) for category, (right, total) in counts.items()}


CALIBRATION_BINS = 15


def calibration_error(
    confidence: np.ndarray, right: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error: in equal-width bins of confidence, the gap between mean
    confidence and accuracy, weighted by the bin's share of the answers (0 for no answers)."""
    if not len(confidence):
        return 0.0
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for number in np.unique(which):
        in_bin = which == number
        error += in_bin.mean() * abs(confidence[in_bin].mean() - right[in_bin].mean())
    return float(error)


def confidences(
    outcomes: Sequence[Outcome], *, served: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, right) of the answered uploads: `confidence` as served, or the model's own
    top probability before calibration (only uploads scored in-process have it)."""
    confidence: list[float] = []
    right: list[bool] = []
    for outcome in outcomes:
        if outcome.confidence is None:
            continue
        if served:
            confidence.append(outcome.confidence)
        elif outcome.model_probabilities is not None:
            confidence.append(float(outcome.model_probabilities.max()))
        else:
            continue
        right.append(outcome.right)
    return np.array(confidence, dtype=np.float64), np.array(right, dtype=np.float64)


def save_reliability_diagram(outcomes: Sequence[Outcome], path: Path) -> None:
    """Accuracy against confidence in `CALIBRATION_BINS` bins, the model's own probabilities
    beside the served ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("served `confidence`", True)]
    if any(outcome.model_probabilities is not None for outcome in outcomes):
        panels.insert(0, ("the model's own, uncalibrated", False))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    for axis, (title, served) in zip(axes[0], panels, strict=True):
        confidence, right = confidences(outcomes, served=served)
        which = np.clip(np.ceil(confidence * CALIBRATION_BINS).astype(int) - 1, 0, None)
        counts = np.bincount(which, minlength=CALIBRATION_BINS)
        accuracy = np.bincount(which, right, CALIBRATION_BINS) / np.maximum(counts, 1)
        mean = np.bincount(which, confidence, CALIBRATION_BINS) / np.maximum(counts, 1)
        filled = counts > 0
        width = edges[1] - edges[0]
        axis.bar(edges[:-1][filled], accuracy[filled], width, align="edge", label="accuracy")
        axis.bar(
            edges[:-1][filled],
            (mean - accuracy)[filled],
            width,
            bottom=accuracy[filled],
            align="edge",
            color="tab:red",
            alpha=0.4,
            label="gap to mean confidence",
        )
        axis.plot([0, 1], [0, 1], "k--", linewidth=1)
        for left, count in zip(edges[:-1][filled], counts[filled], strict=True):
            axis.text(left + width / 2, 0.02, str(count), rotation=90, ha="center", fontsize=7)
        error = calibration_error(confidence, right)
        axis.set_title(f"{title}\nECE {100 * error:.2f} % over {len(confidence)} uploads")
        axis.set_xlabel("confidence (bars: uploads per bin)")
        axis.set_ylabel("accuracy")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_report(outcomes: Sequence[Outcome], worst: int = 12) -> str:
    table = accuracy_by_category(outcomes)
    width = max(len("overall"), *(len(category) for category in table))
    lines = [f"{'category':<{width}}  {'images':>6}  {'right':>6}  accuracy"]
    for category, (right, total) in table.items():
        lines.append(f"{category:<{width}}  {total:>6}  {right:>6}  {100 * right / total:7.2f} %")
    right = sum(right for right, _ in table.values())
    total = sum(total for _, total in table.values())
    lines.append(f"{'overall':<{width}}  {total:>6}  {right:>6}  {100 * right / total:7.2f} %")
    served = confidences(outcomes)
    if len(served[0]):
        lines += [
            "",
            f"Expected calibration error of `confidence`: {100 * calibration_error(*served):.2f} "
            f"% ({CALIBRATION_BINS} bins, the {len(served[0])} answered uploads)",
        ]
        own = confidences(outcomes, served=False)
        if len(own[0]):
            lines.append(
                f"  of the model's own probabilities, before calibration: "
                f"{100 * calibration_error(*own):.2f} %"
            )
    confusions: Counter[tuple[int, str]] = Counter()
    where: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for outcome in outcomes:
        if not outcome.right:
            key = (outcome.upload.label, outcome.predicted)
            confusions[key] += 1
            where[key][outcome.upload.category] += 1
    if confusions:
        lines += ["", "Worst confusions (true -> predicted: count; where):"]
        for (label, predicted), count in confusions.most_common(worst):
            categories = ", ".join(
                f"{category} {n}" for category, n in where[(label, predicted)].most_common(4)
            )
            lines.append(f"  {label} -> {predicted}: {count}; {categories}")
    return "\n".join(lines)


def save_contact_sheet(outcomes: Sequence[Outcome], path: Path, most: int = 120) -> int:
    """The failures side by side: original | what the model saw | category, label -> prediction."""
    failures = [outcome for outcome in outcomes if not outcome.right][:most]
    cell, caption = 112, 150
    row_width = 2 * cell + caption
    columns = 3
    rows = max(1, -(-len(failures) // columns))
    sheet = Image.new("RGB", (columns * row_width, rows * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for number, outcome in enumerate(failures):
        left, top = (number % columns) * row_width, (number // columns) * cell
        original = ImageOps.exif_transpose(Image.open(io.BytesIO(outcome.upload.data)))
        if original.mode in ("I;16", "I", "F"):
            values = np.asarray(original, dtype=np.float64)
            spread = max(float(values.max() - values.min()), 1e-6)
            original = Image.fromarray(((values - values.min()) * 255 / spread).astype(np.uint8))
        original = original.convert("RGBA")
        backdrop = Image.new("RGBA", original.size, (190, 230, 190, 255))  # Shows transparency.
        backdrop.alpha_composite(original)
        original = backdrop.convert("RGB")
        original.thumbnail((cell - 4, cell - 4))
        sheet.paste(original, (left + 2, top + 2))
        if outcome.model_input is not None:
            seen = Image.fromarray(np.clip(outcome.model_input, 0, 255).astype(np.uint8))
            sheet.paste(
                seen.resize((cell - 4, cell - 4), Image.Resampling.NEAREST),
                (left + cell + 2, top + 2),
            )
        text = f"{outcome.upload.category}\n#{outcome.upload.digit_index}\n"
        text += f"{outcome.upload.label} -> {outcome.predicted}"
        draw.multiline_text((left + 2 * cell + 6, top + 30), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return len(failures)
