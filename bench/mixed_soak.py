"""A mixed soak: valid PNGs and JPEGs, invalid files, oversize bodies and uploads cut off half
way, all at once for a while, with the service's memory and open files sampled throughout.

    python -m bench --soak-mixed 120

A leak of memory or of file descriptors (a connection, a temporary file, a decoder) shows as
growth between the first and the last sample.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from bench.payloads import Payload

CONCURRENCY = 32
Sample = tuple[float, float, int]  # seconds, RSS MB, open file descriptors


def open_files(pid: int, children: Callable[[int], list[int]]) -> int:
    total = 0
    for each in (pid, *children(pid)):
        try:
            total += len(os.listdir(f"/proc/{each}/fd"))
        except OSError:
            continue
    return total


async def _cut_off_upload(port: int, body: bytes) -> str:
    """Declares the whole body, sends half, and hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    del reader
    return "cut off"


def mixed_requests(
    payloads: list[Payload], max_upload_bytes: int
) -> list[tuple[str, dict[str, Any]]]:
    png, jpeg = payloads[0], payloads[-1]
    oversize = b"\0" * (max_upload_bytes + 1)
    return [
        ("png", {"content": png.image, "headers": {"content-type": "image/png"}}),
        ("jpeg", {"files": {"file": ("photo.jpg", jpeg.image, "image/jpeg")}}),
        ("invalid", {"content": b"not an image" * 100, "headers": {"content-type": "image/png"}}),
        (
            "truncated",
            {
                "content": jpeg.image[: len(jpeg.image) // 3],
                "headers": {"content-type": "image/jpeg"},
            },
        ),
        ("oversize", {"content": oversize, "headers": {"content-type": "image/png"}}),
    ]


async def _load(
    port: int, payloads: list[Payload], seconds: float, max_upload_bytes: int
) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    kinds = itertools.cycle([*mixed_requests(payloads, max_upload_bytes), ("cut off", {})])
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
    ) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                name, request = next(kinds)
                try:
                    if name == "cut off":
                        await _cut_off_upload(port, payloads[-1].image)
                        outcomes["cut off"] += 1
                        continue
                    response = await client.post("/predict", **request)
                    outcomes[f"{name} {response.status_code}"] += 1
                except (httpx.HTTPError, OSError) as error:
                    outcomes[f"{name} {type(error).__name__}"] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


def run(
    port: int,
    pid: int,
    payloads: list[Payload],
    seconds: float,
    rss_mb: Callable[[int], float],
    children: Callable[[int], list[int]],
    max_upload_bytes: int,
    every_s: float = 10,
) -> tuple[list[Sample], Counter[str]]:
    samples: list[Sample] = [(0.0, rss_mb(pid), open_files(pid, children))]
    began = time.perf_counter()

    async def sampled() -> Counter[str]:
        load = asyncio.create_task(_load(port, payloads, seconds, max_upload_bytes))
        while not load.done():
            await asyncio.sleep(min(every_s, max(0.1, seconds - (time.perf_counter() - began))))
            sample = (time.perf_counter() - began, rss_mb(pid), open_files(pid, children))
            samples.append(sample)
            print(
                f"  {sample[0]:6.0f} s  RSS {sample[1]:.0f} MB  open files {sample[2]}", flush=True
            )
        return await load

    outcomes = asyncio.run(sampled())
    time.sleep(2)  # Let closed connections be reaped before the last count.
    samples.append((time.perf_counter() - began, rss_mb(pid), open_files(pid, children)))
    return samples, outcomes
