from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.batching import MicroBatcher
from app.errors import InferenceError, NotReadyError, OverloadedError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """A predict_batch that doubles numbers, remembers its batches and can be held or failed."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()
        self.fail_on: int | None = None

    def __call__(self, items: list[int]) -> list[int]:
        self.release.wait(5)
        time.sleep(self.delay_s)
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("model exploded")
        return [item * 2 for item in items]


def make_batcher(recorder: Recorder, **overrides: object) -> MicroBatcher[int, int]:
    options = {"max_batch_size": 8, "batch_timeout_ms": 0, "max_queue_size": 100, **overrides}
    return MicroBatcher(recorder, **options)  # type: ignore[arg-type]


async def test_lone_request_goes_straight_through():
    recorder = Recorder()
    async with make_batcher(recorder, batch_timeout_ms=500) as batcher:
        started = time.perf_counter()
        completed = await batcher.submit(21)
        elapsed = time.perf_counter() - started
    assert completed.value == 42
    assert completed.batch_size == 1
    assert elapsed < 0.25  # It did not wait out the 500 ms batch timeout.


class ThreadRecorder:
    """A predict_batch that notes which thread ran each batch."""

    def __init__(self) -> None:
        self.threads: list[tuple[int, str]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.append((len(items), threading.current_thread().name))
        return [item * 2 for item in items]


@pytest.mark.parametrize("inline_max_ms", [0.0, 50.0])
async def test_a_lone_cheap_call_runs_on_the_event_loop_once_measured(inline_max_ms):
    recorder = ThreadRecorder()
    batcher = MicroBatcher(
        recorder,
        max_batch_size=8,
        batch_timeout_ms=0,
        max_queue_size=100,
        inline_max_ms=inline_max_ms,
    )
    async with batcher:
        assert [(await batcher.submit(item)).value for item in (1, 2, 3)] == [2, 4, 6]
        assert [result.value for result in await batcher.submit_many([4, 5])] == [8, 10]
    loop_thread = threading.current_thread().name
    singles = [thread for size, thread in recorder.threads if size == 1]
    # The first lone call is timed on the model thread; later ones run inline when that is cheap.
    assert singles[0] != loop_thread
    assert all((thread == loop_thread) == bool(inline_max_ms) for thread in singles[1:])
    assert all(thread != loop_thread for size, thread in recorder.threads if size > 1)


async def test_a_lone_cheap_call_skips_the_queue_and_a_failure_still_reaches_its_caller():
    recorder = Recorder()
    async with make_batcher(recorder, inline_max_ms=50) as batcher:
        await batcher.submit(1)  # Measured on the model thread first.
        completed = await batcher.submit(2)
        assert (completed.value, completed.batch_size, completed.queue_s) == (4, 1, 0.0)
        recorder.fail_on = 3
        with pytest.raises(InferenceError):
            await batcher.submit(3)
        assert (await batcher.submit(4)).value == 8


async def test_a_lone_call_queues_while_running_it_in_place_is_not_allowed():
    recorder = Recorder()
    allowed = True
    async with make_batcher(recorder, inline_max_ms=50, may_run_inline=lambda: allowed) as batcher:
        await batcher.submit(1)  # Measured on the model thread first.
        assert (await batcher.submit(2)).queue_s == 0.0  # Run in place.
        allowed = False
        queued = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)
        assert not queued.done()  # Its caller waits, in flight beside any other.
        assert (await queued).queue_s > 0.0


async def test_a_caller_waits_at_most_its_timeout_and_the_batcher_goes_on():
    recorder = Recorder()
    async with make_batcher(recorder) as batcher:
        recorder.release.clear()  # The model is stuck on the first batch.
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await batcher.submit(2, timeout_s=0.05)
        with pytest.raises(TimeoutError):
            await batcher.submit_many([3, 4], timeout_s=0.05)
        recorder.release.set()
        assert (await first).value == 2
        assert (await batcher.submit(5, timeout_s=5)).value == 10
    assert recorder.batches == [[1], [5]]  # Those who gave up were skipped.


async def test_requests_arriving_while_busy_form_one_batch():
    recorder = Recorder()
    async with make_batcher(recorder) as batcher:
        recorder.release.clear()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)  # The worker now holds the first item.
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        results = await asyncio.gather(first, *rest)
    assert [r.value for r in results] == [0, 2, 4, 6, 8, 10]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]
    assert [r.batch_size for r in results] == [1, 5, 5, 5, 5, 5]


async def test_batches_never_exceed_max_batch_size():
    recorder = Recorder()
    async with make_batcher(recorder, max_batch_size=4) as batcher:
        recorder.release.clear()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(19)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        results = await asyncio.gather(*tasks)
    assert [r.value for r in results] == [i * 2 for i in range(19)]
    assert max(len(batch) for batch in recorder.batches) == 4
    assert sorted(item for batch in recorder.batches for item in batch) == list(range(19))


async def test_timeout_waits_for_stragglers_under_load():
    recorder = Recorder()
    async with make_batcher(recorder, batch_timeout_ms=200) as batcher:
        recorder.release.clear()
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        early = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        recorder.release.set()  # Two are waiting: the batcher holds the batch open...
        await asyncio.sleep(0.05)
        late = asyncio.create_task(batcher.submit(3))  # ...so this one joins it.
        await asyncio.gather(busy, *early, late)
    assert recorder.batches == [[0], [1, 2, 3]]


async def test_a_cheap_lone_straggler_joins_the_batch_held_open_rather_than_run_alone():
    recorder = Recorder()
    async with make_batcher(recorder, batch_timeout_ms=200, inline_max_ms=50) as batcher:
        await batcher.submit(9)  # Measured cheap: lone items may now run on the caller.
        recorder.release.clear()
        full = list(range(10, 18))  # A full batch goes straight to the model thread.
        busy = asyncio.create_task(batcher.submit_many(full))
        await asyncio.sleep(0.05)
        early = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        recorder.release.set()  # Two are waiting: the batcher holds the batch open...
        await asyncio.sleep(0.05)
        late = asyncio.create_task(batcher.submit(3))  # ...so this one joins it.
        await asyncio.gather(busy, *early, late)
    assert recorder.batches == [[9], full, [1, 2, 3]]


async def test_full_batch_is_sent_without_waiting_for_the_timeout():
    recorder = Recorder()
    async with make_batcher(recorder, max_batch_size=3, batch_timeout_ms=5000) as batcher:
        recorder.release.clear()
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        full = [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3)]
        recorder.release.set()
        started = time.perf_counter()
        await asyncio.gather(busy, *full)
    assert time.perf_counter() - started < 2
    assert recorder.batches == [[0], [1, 2, 3]]


async def test_batch_error_reaches_every_caller_and_the_batcher_goes_on():
    recorder = Recorder()
    recorder.fail_on = 3
    async with make_batcher(recorder) as batcher:
        recorder.release.clear()
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        doomed = [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        assert (await busy).value == 0
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(outcome, InferenceError) for outcome in outcomes)
        assert (await batcher.submit(5)).value == 10


async def test_wrong_number_of_results_is_an_error_for_everyone():
    async with MicroBatcher(
        lambda items: [], max_batch_size=4, batch_timeout_ms=0, max_queue_size=10
    ) as batcher:
        with pytest.raises(InferenceError):
            await batcher.submit(1)


async def test_cancelled_callers_are_skipped():
    recorder = Recorder()
    async with make_batcher(recorder) as batcher:
        recorder.release.clear()
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        recorder.release.set()
        assert (await kept).value == 4
        await busy
    assert recorder.batches == [[0], [2]]


async def test_full_queue_is_refused_at_once():
    recorder = Recorder()
    async with make_batcher(recorder, max_batch_size=1, max_queue_size=2) as batcher:
        recorder.release.clear()
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        with pytest.raises(OverloadedError) as refused:
            await batcher.submit(3)
        assert time.perf_counter() - started < 0.05
        assert refused.value.headers["Retry-After"] == "1"
        recorder.release.set()
        assert [r.value for r in await asyncio.gather(busy, *queued)] == [0, 2, 4]


async def test_submit_before_start_is_not_ready():
    batcher = make_batcher(Recorder())
    with pytest.raises(NotReadyError):
        await batcher.submit(1)


async def test_stop_answers_whoever_is_still_waiting():
    recorder = Recorder()
    batcher = make_batcher(recorder, max_batch_size=1)
    batcher.start()
    recorder.release.clear()
    busy = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    recorder.release.set()
    await batcher.stop()
    outcomes = await asyncio.gather(busy, waiting, return_exceptions=True)
    assert all(isinstance(outcome, NotReadyError) for outcome in outcomes)


async def test_many_concurrent_callers_each_get_their_own_result():
    """Guards the batcher under real concurrency: no lost, duplicated or crossed results."""
    recorder = Recorder(delay_s=0.002)
    async with make_batcher(
        recorder, max_batch_size=16, batch_timeout_ms=1, max_queue_size=1000
    ) as batcher:

        async def caller(number: int) -> int:
            await asyncio.sleep((number % 7) / 1000)
            return (await batcher.submit(number)).value

        results = await asyncio.gather(*(caller(n) for n in range(500)))
    assert results == [n * 2 for n in range(500)]
    sizes = [len(batch) for batch in recorder.batches]
    assert sum(sizes) == 500
    assert max(sizes) <= 16
    assert max(sizes) > 1  # Concurrency did produce batches.
