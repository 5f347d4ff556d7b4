"""One image's way through the service: bytes -> preprocessing -> batcher -> model -> result.

Every protocol router calls `classify`, so they all share one batcher and one model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.batching import MicroBatcher
from app.decoding import open_image
from app.errors import InferenceTimeoutError
from app.models import LoadedModel, ModelRegistry
from app.preprocess import Preprocessed, preprocess_image

# Images up to this many pixels are preprocessed on the event loop: a thread hop would cost
# more than the work itself. Larger ones go to a thread pool so they never stall other requests.
INLINE_MAX_PIXELS = 64 * 64

ModelOutput = tuple[LoadedModel, np.ndarray]


@dataclass(frozen=True, slots=True)
class Classified:
    """One image's probabilities, the model version that gave them, and where the time went."""

    model: LoadedModel
    probabilities: np.ndarray
    preprocessed: Preprocessed
    decode_s: float
    queue_s: float
    inference_s: float


class InferenceService:
    def __init__(
        self,
        registry: ModelRegistry,
        batcher: MicroBatcher[np.ndarray, ModelOutput],
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

    async def classify(self, data: bytes) -> Classified:
        started = time.perf_counter()
        opened = open_image(data, max_pixels=self.max_image_pixels)
        profile = self.registry.current.profile
        if opened.pixel_count <= INLINE_MAX_PIXELS:
            preprocessed = preprocess_image(opened, profile)
        else:
            preprocessed = await asyncio.get_running_loop().run_in_executor(
                self.preprocess_pool, preprocess_image, opened, profile
            )
        decoded = time.perf_counter()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                completed = await self.batcher.submit(preprocessed.pixels)
        except TimeoutError:
            raise InferenceTimeoutError(
                f"No result within {self.request_timeout_s:g} s: the service is overloaded."
            ) from None
        model, probabilities = completed.value
        return Classified(
            model,
            probabilities,
            preprocessed,
            decoded - started,
            completed.queue_s,
            completed.inference_s,
        )
