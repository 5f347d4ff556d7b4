"""The clients' transports honour Retry-After: a refused request is sent again after the time the
service asked for, a bounded number of times."""

from __future__ import annotations

import httpx
import pytest

from cnn_serve import retrying
from cnn_serve.retrying import RetryAfterAsyncTransport, RetryAfterTransport


def refusing(times: int, retry_after: str | None = "0") -> tuple[httpx.MockTransport, list[bytes]]:
    """A service that refuses the first `times` requests, then answers; what it was sent."""
    received: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        received.append(request.read())
        if len(received) <= times:
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            return httpx.Response(503, headers=headers, json={"error": {"code": "overloaded"}})
        return httpx.Response(200, json={"label": "7"})

    return httpx.MockTransport(handle), received


def test_a_refused_request_is_sent_again_with_its_body():
    mock, received = refusing(2)
    with httpx.Client(transport=RetryAfterTransport(mock)) as client:
        response = client.post("http://service/predict", content=b"image bytes")
    assert response.status_code == 200
    assert received == [b"image bytes"] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_async_transport_retries_multipart_uploads_too(anyio_backend):
    mock, received = refusing(1)
    async with httpx.AsyncClient(transport=RetryAfterAsyncTransport(mock)) as client:
        response = await client.post("http://service/predict", files={"file": ("a.png", b"png")})
    assert response.status_code == 200
    assert len(received) == 2
    assert received[0] == received[1]
    assert b"png" in received[0]


@pytest.mark.parametrize(
    ("times", "retry_after", "sent"),
    [
        (1, None, 1),  # No Retry-After: the refusal is the answer.
        (1, "3600", 1),  # Longer than a client would wait.
        (100, "0", retrying.MAX_RETRIES + 1),  # Refused every time: give up after a few.
    ],
)
def test_a_refusal_is_given_back_when_retrying_would_not_help(times, retry_after, sent):
    mock, received = refusing(times, retry_after)
    with httpx.Client(transport=RetryAfterTransport(mock)) as client:
        response = client.post("http://service/predict", content=b"x")
    assert response.status_code == 503
    assert len(received) == sent
