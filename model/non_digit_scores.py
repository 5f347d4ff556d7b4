"""Score the detector of "not one digit": on uploads that are not one digit (`model.non_digits`),
and on uploads that are (`model.uploads`, and the official test digits), in-process or over HTTP.

Beside the detector's own verdicts, the plain softmax confidence is scored as a baseline: how
many digits a threshold on `confidence` would flag to catch 95 % of the non-digits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from scipy.stats import rankdata

from app.detector import DIGIT, Reason
from app.errors import ServiceError
from app.models import LoadedModel
from app.preprocess import preprocess
from cnn_serve.retrying import RetryAfterAsyncTransport
from model.uploads import CONTENT_TYPES

BATCH_SIZE = 256
HTTP_CONCURRENCY = 16
CAUGHT = 0.95  # The share of non-digits a threshold must catch in the baseline comparison.


@dataclass(frozen=True)
class Verdict:
    """What became of one upload: `group` is its kind (non-digits) or category (digits)."""

    group: str
    expected: str  # DIGIT, or the reason it is not one.
    said: str  # DIGIT, a reason, or the error code it was refused with.
    confidence: float | None  # The answer's confidence; None when refused.
    digit_score: float | None  # The detector's P(digit), when known (in-process).

    @property
    def refused(self) -> bool:
        return self.confidence is None

    @property
    def flagged(self) -> bool:
        return not self.refused and self.said != DIGIT


Item = tuple[str, str, bytes, str]  # (group, expected, data, file extension)


def score_in_process(model: LoadedModel, items: Iterable[Item]) -> list[Verdict]:
    if model.detector is None:
        raise SystemExit(f"{model.path} has no detector: train one with model.train_detector")
    verdicts: list[Verdict] = []
    pending: list[tuple[str, str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        answers = model.answer_batch([item[2] for item in pending])
        for (group, expected, _), answer in zip(pending, answers, strict=True):
            said = DIGIT if answer.reason is None else answer.reason.value
            confidence = float(answer.probabilities.max())
            verdicts.append(Verdict(group, expected, said, confidence, answer.digit_probability))
        pending.clear()

    for group, expected, data, _ in items:
        try:
            pending.append((group, expected, preprocess(data, model.profile)))
        except ServiceError as error:
            verdicts.append(Verdict(group, expected, error.code, None, None))
        if len(pending) >= BATCH_SIZE:
            flush()
    flush()
    return verdicts


def score_over_http(url: str, items: Iterable[Item]) -> list[Verdict]:
    return asyncio.run(_score_over_http(url, list(items)))


async def _score_over_http(url: str, items: list[Item]) -> list[Verdict]:
    limit = asyncio.Semaphore(HTTP_CONCURRENCY)
    transport = RetryAfterAsyncTransport()
    async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as client:

        async def score(item: Item) -> Verdict:
            group, expected, data, extension = item
            async with limit:
                response = await client.post(
                    "/predict", content=data, headers={"content-type": CONTENT_TYPES[extension]}
                )
            body = response.json()
            if response.status_code != 200:
                return Verdict(group, expected, body["error"]["code"], None, None)
            if body.get("is_digit") is None:
                raise SystemExit(f"{url} serves a version without a detector")
            said = DIGIT if body["is_digit"] else body["reason"]
            return Verdict(group, expected, said, float(body["confidence"]), None)

        return list(await asyncio.gather(*(score(item) for item in items)))


def _share(count: int, total: int) -> str:
    return f"{count / total:.1%}" if total else "-"


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The chance that a random positive scores above a random negative (ties count half)."""
    ranks = rankdata(np.concatenate([positives, negatives]))  # Ties share their mean rank.
    rank_sum = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(rank_sum / (len(positives) * len(negatives)))


def false_flags_at_caught(
    non_digit: np.ndarray, digit: np.ndarray, caught: float = CAUGHT
) -> float:
    """Flagging everything whose score is at most the threshold that catches `caught` of the
    non-digits (low score = not a digit): the share of digits flagged too."""
    threshold = np.quantile(non_digit, caught)
    return float((digit <= threshold).mean())


def format_report(non_digits: Sequence[Verdict], digits: Sequence[Verdict]) -> str:
    """Per kind: flagged, refused, flagged for the right reason; false flags per category of
    digits; the detector's and the softmax confidence's separation of the two."""
    lines = [
        f"{'kind':<17} {'uploads':>7} {'flagged':>8} {'as it':>7} {'refused':>8} "
        f"{'not answered':>13} {'median confidence':>18}",
    ]
    groups: dict[str, list[Verdict]] = {}
    for verdict in non_digits:
        groups.setdefault(verdict.group, []).append(verdict)
    wanted = {reason.value for reason in Reason}
    for label, members in [
        *groups.items(),
        (
            "all not a digit",
            [verdict for verdict in non_digits if verdict.expected == Reason.NOT_A_DIGIT],
        ),
    ]:
        flagged = sum(verdict.flagged for verdict in members)
        right = sum(verdict.said == verdict.expected for verdict in members)
        refused = sum(verdict.refused for verdict in members)
        confidences = [v.confidence for v in members if v.confidence is not None]
        median = f"{np.median(confidences):.3f}" if confidences else "-"
        lines.append(
            f"{label:<17} {len(members):>7} {_share(flagged, len(members)):>8} "
            f"{_share(right, len(members)):>7} {_share(refused, len(members)):>8} "
            f"{_share(flagged + refused, len(members)):>13} {median:>18}"
        )
    lines.append("")
    lines.append(f"Digits flagged (false flags), of {len(digits)} digit uploads:")
    by_group: dict[str, list[Verdict]] = {}
    for verdict in digits:
        by_group.setdefault(verdict.group, []).append(verdict)
    answered = [verdict for verdict in digits if not verdict.refused]
    flagged_digits = [verdict for verdict in answered if verdict.said in wanted]
    lines.append(f"  all: {_share(len(flagged_digits), len(answered))} of {len(answered)} answered")
    worst = sorted(
        by_group.items(), key=lambda item: -sum(v.flagged for v in item[1]) / len(item[1])
    )
    for group, members in worst[:6]:
        count = sum(verdict.flagged for verdict in members)
        if count:
            lines.append(f"  {group}: {_share(count, len(members))} ({count} of {len(members)})")
    lines.append("")
    lines.append(_separation(non_digits, digits))
    return "\n".join(lines)


def _separation(non_digits: Sequence[Verdict], digits: Sequence[Verdict]) -> str:
    """AUROC and false flags at 95 % caught, for the detector (when its scores are known) and
    for the softmax confidence, over the uploads both answered."""
    negatives = [verdict for verdict in non_digits if not verdict.refused]
    positives = [verdict for verdict in digits if not verdict.refused]
    if not negatives or not positives:
        return "(too few answered uploads to compare)"
    parts = []
    for name, attribute in (
        ("detector P(digit)", "digit_score"),
        ("softmax confidence", "confidence"),
    ):
        if any(getattr(v, attribute) is None for v in [*negatives, *positives]):
            continue  # Over HTTP the detector's score is not sent.
        non_digit = np.array([getattr(v, attribute) for v in negatives], dtype=np.float64)
        digit = np.array([getattr(v, attribute) for v in positives], dtype=np.float64)
        false_flags = false_flags_at_caught(non_digit, digit)
        parts.append(
            f"{name}: AUROC {auroc(digit, non_digit):.4f}, {false_flags:.2%} of digits flagged "
            f"when {CAUGHT:.0%} of non-digits are"
        )
    return "Separating non-digits from digits (uploads answered by both):\n  " + "\n  ".join(parts)
