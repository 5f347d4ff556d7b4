"""Overload sheds fast: admission control in-process with a stand-in app of known capacity, and
the real server flooded by wrk over TCP."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from app.admission import MIN_IN_FLIGHT, AdmissionControl
from bench.__main__ import WRK_SCRIPT
from tests.imaging import png
from tests.server import running_server

SERVICE_TIME_S = 0.01  # The stand-in app serves one request at a time, each in 10 ms.


def stand_in(lock: asyncio.Lock):
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        async with lock:
            await asyncio.sleep(SERVICE_TIME_S)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def call(
    app: AdmissionControl, path: str = "/predict", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], float]:
    began = time.perf_counter()
    messages = []

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):  # type: ignore[no-untyped-def]
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    await app(scope, receive, send)
    start = messages[0]
    headers = {name.decode(): value.decode() for name, value in start.get("headers", [])}
    return start["status"], headers, time.perf_counter() - began


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_admission_learns_capacity_and_then_sheds_at_once(anyio_backend):
    budget_s = 0.1
    app = AdmissionControl(
        stand_in(asyncio.Lock()),
        budget_s=budget_s,
        applies_to=lambda scope: scope["path"] == "/predict",
    )
    # Until the capacity is known nothing is refused, however many arrive.
    first = await asyncio.gather(*(call(app) for _ in range(40)))
    assert {status for status, _, _ in first} == {200}
    assert app.capacity_per_s == pytest.approx(1 / SERVICE_TIME_S, rel=0.3)
    limit = max(MIN_IN_FLIGHT, app.capacity_per_s * budget_s)
    # Now a flood: the worker keeps `limit` in flight, and the rest are told at once.
    flood = await asyncio.gather(*(call(app) for _ in range(60)))
    accepted = [took for status, _, took in flood if status == 200]
    shed = [(headers, took) for status, headers, took in flood if status == 503]
    assert len(accepted) <= limit + 1
    assert len(shed) >= 60 - limit - 1
    assert all(headers["retry-after"] == "1" for headers, _ in shed)
    # A small body arrived with the headers and keeps its connection; a large one, not yet read,
    # is not worth receiving, so that refusal closes the connection.
    assert all("connection" not in headers for headers, _ in shed)
    refused = await asyncio.gather(
        *(call(app) for _ in range(int(limit) + 1)),
        call(app, headers=[(b"content-length", b"200000")]),
        call(app, headers=[(b"transfer-encoding", b"chunked")]),
        call(app, headers=[(b"content-length", b"900")]),
    )
    large, chunked, small = refused[-3:]
    assert (large[0], large[1]["connection"]) == (503, "close")
    assert (chunked[0], chunked[1]["connection"]) == (503, "close")
    assert small[0] == 503
    assert "connection" not in small[1]
    assert max(took for _, took in shed) < 0.005
    assert max(accepted) < budget_s * 1.5  # What was admitted kept to the budget.
    # Requests outside the inference paths are never shed.
    statuses = await asyncio.gather(*(call(app, "/health/live") for _ in range(30)))
    assert {status for status, _, _ in statuses} == {200}


def wrk_or_skip() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("wrk must be installed in CI (.ci/run installs it)")
    pytest.skip("wrk is not installed here (apt-get install wrk)")


@pytest.mark.slow
def test_a_flood_is_shed_fast_and_the_server_recovers(digits, tmp_path: Path):
    """256 connections hammering one worker: only 200s and fast 503s, the accepted requests keep
    a bounded tail, and right after the flood a request is answered quickly."""
    wrk = wrk_or_skip()
    images, labels = digits
    budget_ms = 50
    with (
        running_server(tmp_path / "server.log", overload_budget_ms=str(budget_ms)) as url,
        tempfile.NamedTemporaryFile() as body,
    ):
        body.write(png(images[0]))
        body.flush()
        env = {
            **os.environ,
            "BENCH_BODY": body.name,
            "BENCH_HEADERS": "Content-Type: image/png",
            "BENCH_EXPECT": f'"label":"{labels[0]}"',
        }
        result = subprocess.run(
            [
                wrk,
                "-t1",
                "-c256",
                "-d4s",
                "--timeout",
                "10s",
                "-s",
                str(WRK_SCRIPT),
                f"{url}/predict",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        values = dict(
            pair.split("=")
            for line in result.stdout.splitlines()
            if line.startswith("BENCH_")
            for pair in line.split()[1:]
        )
        ok, shed = int(values["ok"]), int(values["shed"])
        status_errors = int(values["errors_status"])
        assert int(values["wrong"]) == 0
        assert status_errors == shed, "every refusal was a 503"
        assert ok > 1000
        assert shed > 0
        assert int(values["accepted_p99"]) / 1000 < budget_ms * 6, values
        began = time.perf_counter()
        response = httpx.post(
            f"{url}/predict", content=png(images[1]), headers={"content-type": "image/png"}
        )
        assert response.status_code == 200
        assert time.perf_counter() - began < 0.2
