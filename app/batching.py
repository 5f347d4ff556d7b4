"""Group concurrent requests into one model call.

The batcher knows nothing of HTTP or TensorFlow: it is handed a `predict_batch` callable that
takes a list of items and returns a sequence of results of the same length, and it runs that
callable on one worker thread, so the event loop never waits for the model longer than handing
the call to the thread and back would take.

Adaptive by construction: a request that arrives while the worker is idle goes straight through
as a batch of one, run by the caller itself on the event loop (no queue, no hand-over) when such
a call has been measured to cost less than `inline_max_ms` and `may_run_inline()` allows it.
Requests that arrive while the worker is busy queue up and form the next batch (up to
`max_batch_size`); when several are waiting but the batch is not full, it waits at most
`batch_timeout_ms` for more. Every caller gets its own result or the batch's error; callers that
gave up are skipped; a full queue is refused at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.errors import InferenceError, NotReadyError, OverloadedError

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Completed(Generic[Result]):
    value: Result
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Completed[Result]]
    enqueued_at: float


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        predict_batch: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_size: int,
        batch_timeout_ms: float,
        max_queue_size: int,
        inline_max_ms: float = 0.0,
        may_run_inline: Callable[[], bool] = lambda: True,
        name: str = "inference",
        on_batch: Callable[[int, float, int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or batch_timeout_ms < 0:
            raise ValueError("max_batch_size, max_queue_size >= 1 and batch_timeout_ms >= 0")
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_ms / 1000
        self.max_queue_size = max_queue_size
        self.inline_max_s = inline_max_ms / 1000
        self.may_run_inline = may_run_inline
        # What a batch of one costs the model (a moving average, timed where it runs).
        self._single_cost_s = float("inf")
        # No batch is being formed or run (a lone item may then skip the queue).
        self._idle = True
        self._name = name
        # Told the size and duration of every batch run, and the queue left behind it.
        self.on_batch = on_batch
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._arrival = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MicroBatcher[Item, Result]:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        if self._task is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stop taking work; whoever is still waiting is told the service is shutting down."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(NotReadyError("The service is shutting down."))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, item: Item, timeout_s: float | None = None) -> Completed[Result]:
        """Queue one item and wait for its result, at most `timeout_s` (then TimeoutError);
        raises the batch's error on failure."""
        if (
            self._idle
            and not self._queue
            and self._single_cost_s < self.inline_max_s
            and self.may_run_inline()
        ):
            # Nothing to batch it with and a model call cheaper than a trip through the queue
            # and the batching task (two turns of the event loop): run it here and now.
            return self._run_alone(item)
        [future] = self._enqueue([item])
        async with asyncio.timeout(timeout_s):
            return await future

    def _run_alone(self, item: Item) -> Completed[Result]:
        if self._task is None:
            raise NotReadyError("The model is not loaded yet.")
        try:
            [result], took_s = self._timed([item])
        except Exception as error:
            logger.exception("Batch of 1 failed")
            raise _batch_failure(error) from None
        self._learn_single_cost(took_s)
        if self.on_batch is not None:
            self.on_batch(1, took_s, 0)
        return Completed(result, 0.0, took_s, 1)

    def _learn_single_cost(self, took_s: float) -> None:
        cost = self._single_cost_s
        self._single_cost_s = took_s if cost == float("inf") else 0.9 * cost + 0.1 * took_s

    async def submit_many(
        self, items: Sequence[Item], timeout_s: float | None = None
    ) -> list[Completed[Result]]:
        """Queue several items at once, so they can share a batch, and wait for all of them, at
        most `timeout_s` (then TimeoutError)."""
        futures = self._enqueue(items)
        try:
            async with asyncio.timeout(timeout_s):
                return list(await asyncio.gather(*futures))
        finally:
            for future in futures:  # One failed, or the caller gave up: skip the rest.
                future.cancel()

    def _enqueue(self, items: Sequence[Item]) -> list[asyncio.Future[Completed[Result]]]:
        if self._task is None:
            raise NotReadyError("The model is not loaded yet.")
        if len(self._queue) + len(items) > self.max_queue_size:
            raise OverloadedError(
                f"The inference queue is full ({self.max_queue_size} waiting); retry shortly."
            )
        loop = asyncio.get_running_loop()
        enqueued_at = time.perf_counter()
        futures: list[asyncio.Future[Completed[Result]]] = []
        for item in items:
            futures.append(loop.create_future())
            self._queue.append(_Pending(item, futures[-1], enqueued_at))
        self._arrival.set()
        return futures

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._arrival.clear()
                await self._arrival.wait()
            batch = self._take_batch()
            # From the moment a batch is taken until it is answered, a lone item must queue to
            # join the next one (or this one, while it waits for stragglers).
            self._idle = False
            try:
                if 1 < len(batch) < self.max_batch_size and self.batch_timeout_s > 0:
                    await self._fill(batch)
                if batch:
                    await self._run_batch(batch)
            finally:
                self._idle = True

    def _take_batch(
        self, batch: list[_Pending[Item, Result]] | None = None
    ) -> list[_Pending[Item, Result]]:
        batch = [] if batch is None else batch
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue.popleft()
            if not pending.future.done():  # Its caller gave up (cancelled or timed out).
                batch.append(pending)
        return batch

    async def _fill(self, batch: list[_Pending[Item, Result]]) -> None:
        deadline = time.perf_counter() + self.batch_timeout_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrival.wait()
            except TimeoutError:
                return
            self._take_batch(batch)

    def _timed(self, items: list[Item]) -> tuple[Sequence[Result], float]:
        started = time.perf_counter()
        results = self.predict_batch(items)
        return results, time.perf_counter() - started

    async def _run_batch(self, batch: list[_Pending[Item, Result]]) -> None:
        assert self._executor is not None
        started = time.perf_counter()
        items = [pending.item for pending in batch]
        try:
            if len(items) == 1 and self._single_cost_s < self.inline_max_s:
                results, took_s = self._timed(items)
            else:
                results, took_s = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._timed, items
                )
            if len(items) == 1:
                self._learn_single_cost(took_s)
            if len(results) != len(batch):
                raise InferenceError(
                    f"predict_batch returned {len(results)} results for {len(batch)} items"
                )
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(NotReadyError("The service is shutting down."))
            raise
        except Exception as error:
            logger.exception("Batch of %d failed", len(batch))
            failure = _batch_failure(error)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(failure)
            return
        finished = time.perf_counter()
        if self.on_batch is not None:
            self.on_batch(len(batch), finished - started, len(self._queue))
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(
                    Completed(result, started - pending.enqueued_at, finished - started, len(batch))
                )


def _batch_failure(error: Exception) -> InferenceError:
    if isinstance(error, InferenceError):
        return error
    return InferenceError(f"The model failed on this batch: {type(error).__name__}")
