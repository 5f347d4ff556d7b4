"""Bodies that never arrive, or arrive a few bytes at a time, and headers that trickle in."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import httpx
import pytest

from tests.hostile.conftest import BODY_IDLE_TIMEOUT_S, BODY_TIMEOUT_S
from tests.imaging import png

pytestmark = pytest.mark.slow


@contextmanager
def connection(url: str) -> Iterator[socket.socket]:
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        yield sock


def answer(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def head(path: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("path", "content_type", "start"),
    [
        ("/predict", "image/png", b"\x89PNG\r\n\x1a\n\x00\x00"),
        ("/predict", "multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-da"),
        ("/v2/models/mnist/infer", "application/json", b'{"inputs": ['),
    ],
    ids=["raw", "multipart", "kserve"],
)
def test_a_body_that_never_arrives_gets_408(hostile_url, path, content_type, start):
    with connection(hostile_url) as sock:
        began = time.perf_counter()
        sock.sendall(head(path, content_type, 100_000) + start)
        reply = answer(sock)  # The server answers, then closes: no more body is awaited.
        waited = time.perf_counter() - began
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request_timeout" in reply or b'"error"' in reply
    assert BODY_IDLE_TIMEOUT_S * 0.8 <= waited < BODY_IDLE_TIMEOUT_S + 2


def test_a_trickled_body_gets_408_at_the_deadline(hostile_url):
    with connection(hostile_url) as sock:
        began = time.perf_counter()
        sock.sendall(head("/predict", "image/png", 100_000))
        reply = b""
        sock.settimeout(BODY_IDLE_TIMEOUT_S / 2)
        while time.perf_counter() - began < BODY_TIMEOUT_S + 3:
            try:
                sock.sendall(b"\x00" * 4)  # Never idle for long ...
            except OSError:
                break
            try:
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            if reply:
                break
        waited = time.perf_counter() - began
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert BODY_TIMEOUT_S * 0.8 <= waited < BODY_TIMEOUT_S + 2  # ... but out of time in all.


def test_trickling_headers_do_not_hold_up_other_requests(hostile_url, digits):
    """A few hundred connections sending their headers a byte at a time (slowloris) cost the
    event loop nothing while they wait: real requests are answered as quickly as ever."""
    data = png(digits[0][0])
    with ExitStack() as stack:
        slow = [stack.enter_context(connection(hostile_url)) for _ in range(200)]
        for sock in slow:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        with httpx.Client(base_url=hostile_url, timeout=5) as client:
            latencies = []
            for round_number in range(20):
                for sock in slow:
                    sock.sendall(b"a")
                began = time.perf_counter()
                response = client.post(
                    "/predict", content=data, headers={"content-type": "image/png"}
                )
                latencies.append(time.perf_counter() - began)
                assert response.status_code == 200, round_number
    assert max(latencies) < 0.5, latencies


def test_a_client_that_leaves_mid_body_is_a_499_and_no_error(hostile_url):
    """Nobody is left to answer: counted as nginx's 499, with no traceback in the log (the
    fixture checks the log when the server stops)."""
    with connection(hostile_url) as sock:
        sock.sendall(head("/predict", "image/png", 100_000) + b"\x89PNG\r\n\x1a\n")
        time.sleep(0.2)  # The request is in the app, waiting for the rest of its body.
    deadline = time.perf_counter() + 5
    while True:
        scrape = httpx.get(f"{hostile_url}/metrics").text
        if 'route="/predict",status="499"' in scrape or time.perf_counter() > deadline:
            break
        time.sleep(0.1)
    assert 'route="/predict",status="499"' in scrape
