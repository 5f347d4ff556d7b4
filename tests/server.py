"""Start the real service (`python -m app`, uvicorn) on 127.0.0.1 for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(
    base_url: str, process: subprocess.Popen[bytes] | None, timeout_s: float
) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} was not ready within {timeout_s} s")


@contextmanager
def running_server(log_path: Path, **settings: str) -> Iterator[str]:
    """Yields the base URL of a fresh `python -m app` configured by CNN_SERVE_* settings."""
    with server_process(log_path, **settings) as (base_url, _):
        yield base_url


@contextmanager
def server_process(
    log_path: Path, *, metrics_dir: Path | None = None, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The same, yielding the process too (its pid, for signals and memory). `metrics_dir`: where
    its metric files go, for a server the test kills (SIGKILL leaves them behind), not $TMPDIR."""
    port = free_port()
    # One worker unless a test asks for more: the suite starts many servers.
    env = {
        **os.environ,
        "CNN_SERVE_HOST": "127.0.0.1",
        "CNN_SERVE_PORT": str(port),
        "CNN_SERVE_WORKERS": "1",
    }
    env.update({f"CNN_SERVE_{key.upper()}": value for key, value in settings.items()})
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base_url, process, timeout_s=60)
            yield base_url, process
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
