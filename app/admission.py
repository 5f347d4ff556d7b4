"""Admission control: under overload, a 503 within the budget instead of a queue that makes
everyone wait.

A request admitted to a busy worker waits for the ones already in it; by Little's law that wait
is the number in flight over the rate at which the worker completes them. The middleware learns
that rate while the worker is busy and admits at most `capacity x budget` inference requests at
once. One more waits, in line and before its body is read, for one of them to finish, but never
longer than the budget: then it is answered `503 overloaded` with `Retry-After`. So the admitted
ones keep a bounded latency, and the worker keeps serving near its capacity.

A request can also wait before the middleware sees it: in the event loop, behind every request
read in the same turn. When each of those is answered without the loop turning (a lone image on
an idle batcher runs its model call in place), none of them is ever in flight alongside another,
and a flood would queue in the loop unseen and unrefused. So the middleware also measures how
far behind the loop runs (`behind_s`: how long a callback scheduled by an arriving request waits
for its turn), and `keeping_up` tells the batcher when it must queue instead, so the waiting
requests are in flight, where they are counted and refused.

Why wait at all rather than refuse at once: refusing costs the worker time too (~0.1 ms, in the
same event loop), and a client that retries the moment it is refused comes straight back. Refused
at once, a few such clients were most of the worker's work (one worker flooded with 64
connections of 63 KB photos served 70 of its ~400 photos/s); made to wait for a slot, each costs
at most one refusal per budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.error_handlers import is_protocol_path, uncounted_error_response
from app.errors import OverloadedError

# Completions are counted over windows this long; a window counts towards the capacity when the
# worker had work waiting throughout it.
WINDOW_S = 0.1
BUSY_IN_FLIGHT = 2
# The capacity is the best rate of the busy windows, forgetting it slowly (by this factor per
# window) so it can follow a slower model or heavier uploads. Following the latest rate instead
# would spiral down: refusals cost CPU too, the admitted requests complete more slowly, the
# limit drops, more are refused.
CAPACITY_DECAY = 0.97
# How often an arriving request times the event loop's turn: each timing costs the loop a turn.
LOOP_TIMING_INTERVAL_S = 0.01
# How far behind, as a share of the budget, the loop may run while requests are answered in
# place. A request waits about two turns before it runs (one to be read, one to run), then
# perhaps for a slot, and a refusal is only sent when the loop gets round to its timer.
LOOP_BEHIND_SHARE = 0.25
# Never fewer admitted than this, whatever the measurements say.
MIN_IN_FLIGHT = 8
# A refused request's body this small arrived with its headers and costs nothing to skip. A
# larger one would be received only to be thrown away (a flood of 100 KB JSON bodies took most
# of the worker's time that way), so its connection is closed instead.
SMALL_BODY_BYTES = 16 * 1024


class Admission:
    """The policy and what it has learnt, for one worker: shared by the HTTP middleware below
    and the gRPC server, so both protocols queue for the same slots."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.in_flight = 0
        # Requests waiting for a slot, oldest first; a finishing request hands its slot on.
        self._waiting: deque[asyncio.Future[bool]] = deque()
        self.capacity_per_s = 0.0  # 0 until measured: nothing is refused before then.
        self._window_started = time.monotonic()
        self._window_completed = 0
        self._window_min_in_flight = 0
        self.refusal_message = (
            f"The service is at capacity (a new request would wait over "
            f"{budget_s * 1000:g} ms); retry shortly."
        )
        # Come back after about a budget: by then what was in flight has been answered.
        self.retry_after_s = max(1, math.ceil(budget_s))
        self._shed_counter = metrics.REJECTED.labels(OverloadedError.code)
        self.behind_s = 0.0
        self._loop_timed_at = 0.0

    @property
    def limit(self) -> float:
        if not self.capacity_per_s:
            return float("inf")
        return max(MIN_IN_FLIGHT, self.capacity_per_s * self.budget_s)

    @property
    def keeping_up(self) -> bool:
        """Whether the event loop turns quickly enough for a request arriving now to be read and
        answered within the budget."""
        return self.behind_s <= LOOP_BEHIND_SHARE * self.budget_s

    def enter_now(self) -> bool:
        """Takes a slot if one is free and nobody is waiting for one."""
        self._time_the_loop()
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()  # Gave up waiting.
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return True
        return False

    async def enter_within_budget(self) -> bool:
        """Waits for a finishing request to hand over its slot; False (counted as shed) after
        the budget."""
        # A future and a timer, not `asyncio.wait_for`: under a flood this runs thousands of
        # times a second, and wait_for's extra futures and loop turn cost the worker's time.
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(slot)
        expiry = loop.call_later(self.budget_s, _expire, slot)
        try:
            admitted = await slot
        except BaseException:
            # Cancelled while waiting (the client went away): a slot handed over meanwhile
            # goes on to the next in line.
            if slot.done() and not slot.cancelled() and slot.result():
                self.leave()
            raise
        finally:
            expiry.cancel()
        if not admitted:
            self._shed_counter.inc()
        return admitted

    def _time_the_loop(self) -> None:
        """Now and then, schedules a callback that times its wait for a turn of the event loop.
        Only arriving requests schedule one: an idle worker never wakes up for it."""
        now = time.perf_counter()
        if now - self._loop_timed_at >= LOOP_TIMING_INTERVAL_S:
            self._loop_timed_at = now
            asyncio.get_running_loop().call_soon(self._loop_turned, now)

    def _loop_turned(self, scheduled_at: float) -> None:
        self.behind_s = time.perf_counter() - scheduled_at

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight < self.limit:
            while self._waiting:
                slot = self._waiting.popleft()
                if not slot.done():
                    slot.set_result(True)
                    self.in_flight += 1
                    break
        self._completed()

    def _completed(self) -> None:
        self._window_completed += 1
        self._window_min_in_flight = min(self._window_min_in_flight, self.in_flight)
        now = time.monotonic()
        elapsed = now - self._window_started
        if elapsed < WINDOW_S:
            return
        if self._window_min_in_flight >= BUSY_IN_FLIGHT:
            rate = self._window_completed / elapsed
            self.capacity_per_s = max(rate, self.capacity_per_s * CAPACITY_DECAY)
        self._window_started = now
        self._window_completed = 0
        self._window_min_in_flight = self.in_flight


def _expire(slot: asyncio.Future[bool]) -> None:
    """The budget is spent: no slot for this request."""
    if not slot.done():
        slot.set_result(False)


class AdmissionControl:
    """The HTTP side: inference requests take a slot before their body is read."""

    def __init__(
        self, app: ASGIApp, *, admission: Admission, applies_to: Callable[[Scope], bool]
    ) -> None:
        self.app = app
        self.admission = admission
        self.applies_to = applies_to
        # Built once: a flood brings thousands of refusals a second.
        retry_after = {"Retry-After": str(admission.retry_after_s)}
        self._refusals = {
            (protocol, close): uncounted_error_response(
                "/v2/" if protocol else "/predict",
                OverloadedError.status_code,
                OverloadedError.code,
                admission.refusal_message,
                {**retry_after, "Connection": "close"} if close else retry_after,
            )
            for protocol in (False, True)
            for close in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies_to(scope):
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if not (admission.enter_now() or await admission.enter_within_budget()):
            refusal = self._refusals[is_protocol_path(scope["path"]), _large_body(scope)]
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            admission.leave()


def _large_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not value.isdigit() or int(value) > SMALL_BODY_BYTES
        if name == b"transfer-encoding":
            return True
    return False
