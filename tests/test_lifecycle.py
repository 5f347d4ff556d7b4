"""Model lifecycle over TCP: under steady traffic a new version goes live with zero failed
requests, a broken one never does, a pin holds, and SIGHUP rescans."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cnn_serve.retrying import RetryAfterAsyncTransport
from tests.conftest import REPO
from tests.imaging import png
from tests.server import server_process
from tests.test_reloader import publish, publish_broken

pytestmark = pytest.mark.slow

FIGURES = REPO / "build" / "lifecycle-figures.txt"
POLL_S = "0.2"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def traffic(url: str, data: bytes, stop: asyncio.Event, seen: list[tuple[int, int]]) -> None:
    """Eight clients posting a digit back to back, and readiness checked between."""
    transport = RetryAfterAsyncTransport()  # As a well-behaved client, back off when refused.
    async with httpx.AsyncClient(base_url=url, timeout=30, transport=transport) as client:

        async def one_client() -> None:
            while not stop.is_set():
                response = await client.post(
                    "/predict", content=data, headers={"content-type": "image/png"}
                )
                version = response.json()["model"]["version"] if response.status_code == 200 else -1
                seen.append((response.status_code, version))
                ready = await client.get("/health/ready")
                seen.append((ready.status_code, -2))

        await asyncio.gather(*(one_client() for _ in range(8)))


async def until(condition, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_versions_swap_under_traffic_with_zero_failed_requests(
    tmp_path: Path, digits, compile_cache_dir: Path
):
    model_dir = tmp_path / "models" / "mnist"
    model_dir.mkdir(parents=True)
    publish(model_dir, 1)
    settings = {
        "model_base_dir": str(model_dir.parent),
        "compile_cache_dir": str(compile_cache_dir),
        "model_poll_interval_s": POLL_S,
    }
    data = png(digits[0][0])
    with server_process(tmp_path / "server.log", **settings) as (url, process):
        rss = [rss_mb(process.pid)]

        async def scenario() -> tuple[list[tuple[int, int]], dict[str, Any]]:
            seen: list[tuple[int, int]] = []
            stop = asyncio.Event()
            load = asyncio.create_task(traffic(url, data, stop, seen))
            await until(lambda: len(seen) > 50)
            publish(model_dir, 2)
            sampling = True

            async def sample() -> None:
                while sampling:
                    rss.append(rss_mb(process.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            await until(lambda: any(version == 2 for _, version in seen[-20:]))
            sampling = False
            await sampler
            publish_broken(model_dir, 3)
            async with httpx.AsyncClient(base_url=url) as client:

                async def refused() -> bool:
                    status = (await client.get("/model")).json()["version_status"]
                    return status.get("3", {}).get("state") == "END"

                deadline = time.monotonic() + 60
                while not await refused():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                tf_status = (await client.get("/v1/models/mnist")).json()
            await asyncio.sleep(1)
            stop.set()
            await load
            return seen, tf_status

        seen, tf_status = asyncio.run(scenario())
    statuses = {status for status, _ in seen}
    assert statuses == {200}, f"failed requests: {[s for s in seen if s[0] != 200][:5]}"
    versions = [version for _, version in seen if version > 0]
    switch = versions.index(2)
    assert set(versions[:switch]) == {1}
    assert set(versions[switch:]) == {2}, "once on version 2, never back, never 3"
    by_version = {entry["version"]: entry for entry in tf_status["model_version_status"]}
    assert by_version["2"]["state"] == "AVAILABLE"
    assert by_version["3"]["state"] == "END"
    assert "not a loadable SavedModel" in by_version["3"]["status"]["error_message"]
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(
        f"requests during the swap: {len(versions)}, failed: 0\n"
        f"RSS before the swap: {rss[0]:.0f} MB, peak during it: {max(rss):.0f} MB, "
        f"after: {rss[-1]:.0f} MB\n"
    )


def test_a_pin_holds_and_sighup_rescans(tmp_path: Path, digits, compile_cache_dir: Path):
    model_dir = tmp_path / "models" / "mnist"
    model_dir.mkdir(parents=True)
    publish(model_dir, 1)
    data = png(digits[0][0])
    common = {"model_base_dir": str(model_dir.parent), "compile_cache_dir": str(compile_cache_dir)}
    with server_process(
        tmp_path / "pinned.log", model_version="1", model_poll_interval_s=POLL_S, **common
    ) as (url, _):
        publish(model_dir, 2)
        time.sleep(2)
        body = httpx.post(f"{url}/predict", content=data, headers={"content-type": "image/png"})
        assert body.json()["model"]["version"] == 1
    with server_process(tmp_path / "sighup.log", model_poll_interval_s="0", **common) as (
        url,
        process,
    ):
        assert httpx.get(f"{url}/health/ready").json()["model"]["version"] == 2
        publish(model_dir, 3)
        time.sleep(1)  # No polling: still version 2 ...
        assert httpx.get(f"{url}/health/ready").json()["model"]["version"] == 2
        os.kill(process.pid, signal.SIGHUP)  # ... until told to look.
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health/ready").json()["model"]["version"] != 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert process.poll() is None
