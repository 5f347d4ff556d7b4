"""One image's way through the service: bytes -> preprocessing -> batcher -> model -> result.

Every protocol router calls `classify`, so they all share one batcher and one model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app import metrics, observability
from app.batching import Completed, MicroBatcher
from app.decoding import open_image
from app.detector import Reason
from app.errors import InferenceTimeoutError, InvalidImageError, PayloadTooLargeError
from app.models import Answer, LoadedModel, ModelRegistry, Work
from app.preprocess import Preprocessed, preprocess_image

# Images up to this many pixels are preprocessed on the event loop: a thread hop would cost
# more than the work itself. Larger ones go to a thread pool so they never stall other requests.
INLINE_MAX_PIXELS = 64 * 64

ModelOutput = tuple[LoadedModel, Answer]


@dataclass(frozen=True, slots=True)
class Classified:
    """One image's probabilities, whether it is one digit, the model version that gave them,
    and where the time went."""

    model: LoadedModel
    probabilities: np.ndarray
    reason: Reason | None  # Why it is not one digit; None: it is (or the version cannot tell).
    preprocessed: Preprocessed
    decode_s: float
    queue_s: float
    inference_s: float


class InferenceService:
    def __init__(
        self,
        registry: ModelRegistry,
        batcher: MicroBatcher[Work, ModelOutput],
        preprocess_pool: ThreadPoolExecutor,
        *,
        max_image_pixels: int,
        request_timeout_s: float,
    ) -> None:
        self.registry = registry
        self.batcher = batcher
        self.preprocess_pool = preprocess_pool
        self.max_image_pixels = max_image_pixels
        self.request_timeout_s = request_timeout_s

    async def classify(self, data: bytes, model: LoadedModel | None = None) -> Classified:
        """One encoded image: decoded, preprocessed, classified (by the newest version served,
        unless a version is given)."""
        model = model or self.registry.current
        started = time.perf_counter()
        preprocessed = await self._preprocess(data, model)
        decoded = time.perf_counter()
        metrics.DECODE_SECONDS.observe(decoded - started)
        try:
            item = (preprocessed.pixels, model)
            completed = await self.batcher.submit(item, self.request_timeout_s)
        except TimeoutError:
            raise self._timed_out() from None
        return _classified(preprocessed, completed, decoded - started)

    async def classify_images(
        self, images: Sequence[bytes], model: LoadedModel | None = None
    ) -> list[Classified]:
        """Several encoded images of one request, queued together so they can share a batch.

        The request stands or falls as a whole: the first image that cannot be classified fails
        it, saying which one."""
        model = model or self.registry.current
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self._preprocess(data, model) for data in images), return_exceptions=True
        )
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidImageError | PayloadTooLargeError):
                raise type(outcome)(f"Image {index}: {outcome.message}")
            if isinstance(outcome, BaseException):
                raise outcome
        preprocessed = [outcome for outcome in outcomes if isinstance(outcome, Preprocessed)]
        decode_s = time.perf_counter() - started
        metrics.DECODE_SECONDS.observe(decode_s)
        return await self._classify_all(preprocessed, model, decode_s)

    async def classify_inputs(
        self, inputs: np.ndarray, model: LoadedModel | None = None
    ) -> list[Classified]:
        """(N, 28, 28) model inputs, classified as they are."""
        height, width = inputs.shape[1:]
        taken_as_is = [
            Preprocessed(pixels, False, (0.0, 0.0, float(width), float(height)), 1.0)
            for pixels in inputs
        ]
        return await self._classify_all(taken_as_is, model or self.registry.current, 0.0)

    async def classify_tensor(
        self, data: np.ndarray | Sequence[bytes], model: LoadedModel | None = None
    ) -> list[Classified]:
        """A protocol's input tensor: (N, 28, 28) model inputs, or N encoded images."""
        if isinstance(data, np.ndarray):
            return await self.classify_inputs(data, model)
        return await self.classify_images(data, model)

    async def _classify_all(
        self, preprocessed: list[Preprocessed], model: LoadedModel, decode_s: float
    ) -> list[Classified]:
        try:
            completed = await self.batcher.submit_many(
                [(item.pixels, model) for item in preprocessed], self.request_timeout_s
            )
        except TimeoutError:
            raise self._timed_out() from None
        return [
            _classified(item, result, decode_s)
            for item, result in zip(preprocessed, completed, strict=True)
        ]

    async def _preprocess(self, data: bytes, model: LoadedModel) -> Preprocessed:
        opened = open_image(data, max_pixels=self.max_image_pixels)
        profile = model.profile
        if opened.pixel_count <= INLINE_MAX_PIXELS:
            return preprocess_image(opened, profile)
        return await asyncio.get_running_loop().run_in_executor(
            self.preprocess_pool, preprocess_image, opened, profile
        )

    def _timed_out(self) -> InferenceTimeoutError:
        return InferenceTimeoutError(
            f"No result within {self.request_timeout_s:g} s: the service is overloaded."
        )


def _classified(
    preprocessed: Preprocessed, completed: Completed[ModelOutput], decode_s: float
) -> Classified:
    model, answer = completed.value
    classified = Classified(
        model,
        answer.probabilities,
        answer.reason,
        preprocessed,
        decode_s,
        completed.queue_s,
        completed.inference_s,
    )
    _record(classified)
    return classified


def _record(classified: Classified) -> None:
    observability.model_version.set(classified.model.version)
    metrics.QUEUE_SECONDS.observe(classified.queue_s)
    best = int(classified.probabilities.argmax())
    metrics.predictions_of(classified.model.labels[best]).inc()
    metrics.CONFIDENCE.observe(float(classified.probabilities[best]))
    if classified.preprocessed.inverted:
        metrics.INVERTED.inc()
    if classified.reason is not None:
        metrics.not_one_digit(classified.reason).inc()
