"""httpx transports that honour `Retry-After`: a refused request (503, or 429) is sent again
after the time the service asked for, a few times, before its refusal reaches the caller.

    client = httpx.AsyncClient(base_url=url, transport=RetryAfterAsyncTransport())

The service refuses only when a request would wait longer than its overload budget, and says
when to come back; a client that comes back then instead of failing gets its answer.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx

RETRY_STATUSES = frozenset({429, 503})
# Retries of one request, and the longest wait honoured (a larger Retry-After is not retried).
MAX_RETRIES = 6
MAX_WAIT_S = 30.0


def retry_delay(response: httpx.Response, attempt: int) -> float | None:
    """Seconds to wait before sending the request again, or None to give the answer back."""
    if response.status_code not in RETRY_STATUSES or attempt >= MAX_RETRIES:
        return None
    value = response.headers.get("retry-after", "")
    if not value.isdigit() or int(value) > MAX_WAIT_S:
        return None
    # Jitter spreads clients refused together, so they do not all come back at once.
    return int(value) * random.uniform(0.5, 1.0)


class RetryAfterTransport(httpx.BaseTransport):
    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._transport = transport or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            response = self._transport.handle_request(request)
            delay = retry_delay(response, attempt)
            if delay is None:
                return response
            response.close()
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._transport.close()


class RetryAfterAsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            response = await self._transport.handle_async_request(request)
            delay = retry_delay(response, attempt)
            if delay is None:
                return response
            await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        await self._transport.aclose()
