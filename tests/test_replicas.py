"""Three replicas behind a real load balancer (Debian's nginx) under steady traffic: one is
terminated gracefully, another killed hard, and the traffic carries on on the third."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cnn_serve.retrying import RetryAfterAsyncTransport
from tests.conftest import REPO
from tests.imaging import png
from tests.server import free_port, server_process

pytestmark = pytest.mark.slow

FIGURES = REPO / "build" / "replicas-figures.txt"
CLIENTS = 16

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream cnn_serve {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 10m;
        location / {{
            proxy_pass http://cnn_serve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            # A prediction is a pure function of the image: a request that a replica failed
            # (refused, reset, closed) is safely sent to the next one, even though it is a POST.
            proxy_next_upstream error timeout non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


def nginx_or_skip() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None
    )
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("nginx must be installed in CI (.ci/run installs it)")
    pytest.skip("nginx is not installed here (apt-get install nginx)")


@contextmanager
def load_balancer(nginx: str, directory: Path, backends: list[str]) -> Iterator[str]:
    port = free_port()
    servers = "\n".join(
        f"        server {url.removeprefix('http://')} max_fails=1 fail_timeout=10s;"
        for url in backends
    )
    config = directory / "nginx.conf"
    # As root, nginx's workers would run as nobody, who cannot write to the test's directory.
    user = "user root;" if os.geteuid() == 0 else ""
    config.write_text(NGINX_CONF.format(user=user, dir=directory, servers=servers, port=port))
    stderr = directory / "nginx.stderr"
    with (
        stderr.open("wb") as errors,
        subprocess.Popen(
            [nginx, "-c", str(config), "-p", str(directory)], stderr=errors
        ) as process,
    ):
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if httpx.get(f"{url}/health/live").status_code == 200:
                        break
                except httpx.TransportError:
                    assert process.poll() is None, stderr.read_text()
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(10)


@dataclass
class Answer:
    at_s: float  # When the answer (or the failure) came: a request in flight when a replica
    # was killed fails after the kill, however early it was sent.
    status: int
    served_by: str


async def traffic(url: str, data: bytes, label: str, stop_at_s: float) -> list[Answer]:
    answers: list[Answer] = []
    started = time.monotonic()
    limits = httpx.Limits(max_connections=CLIENTS)

    async def one_client(client: httpx.AsyncClient) -> None:
        while time.monotonic() - started < stop_at_s:
            try:
                response = await client.post(
                    "/predict", content=data, headers={"content-type": "image/png"}
                )
            except httpx.TransportError:
                answers.append(Answer(time.monotonic() - started, 0, "-"))
                continue
            now = time.monotonic() - started
            if response.status_code == 200:
                assert response.json()["label"] == label
            prefix = response.headers.get("x-request-id", "-").split("-")[0]
            answers.append(Answer(now, response.status_code, prefix))

    transport = RetryAfterAsyncTransport(httpx.AsyncHTTPTransport(limits=limits))
    async with httpx.AsyncClient(base_url=url, timeout=30, transport=transport) as client:
        await asyncio.gather(*(one_client(client) for _ in range(CLIENTS)))
    return answers


def test_three_replicas_lose_nothing_to_a_graceful_stop_and_little_to_a_kill(
    tmp_path: Path, digits, compile_cache_dir: Path
):
    nginx = nginx_or_skip()
    images, labels = digits
    data, label = png(images[0]), str(labels[0])
    term_at_s, kill_at_s, stop_at_s = 2.0, 5.0, 8.0
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                server_process(
                    tmp_path / f"replica-{index}.log",
                    metrics_dir=tmp_path / f"metrics-{index}",
                    compile_cache_dir=str(compile_cache_dir),
                    shutdown_grace_s="1",
                )
            )
            for index in range(3)
        ]
        urls = [url for url, _ in replicas]
        prefixes = [
            httpx.get(f"{url}/health/live").headers["x-request-id"].split("-")[0] for url in urls
        ]
        (_, graceful), (_, killed), _ = replicas
        balancer = stack.enter_context(load_balancer(nginx, tmp_path, urls))

        async def scenario() -> list[Answer]:
            load = asyncio.create_task(traffic(balancer, data, label, stop_at_s))
            await asyncio.sleep(term_at_s)
            graceful.send_signal(signal.SIGTERM)
            await asyncio.sleep(kill_at_s - term_at_s)
            killed.kill()
            return await load

        answers = asyncio.run(scenario())
        graceful.wait(15)
    assert graceful.returncode == 0

    def window(start: float, end: float) -> list[Answer]:
        return [answer for answer in answers if start <= answer.at_s < end]

    before_kill = window(0, kill_at_s)
    after_kill = window(kill_at_s, stop_at_s)
    failed_before = [answer for answer in before_kill if answer.status != 200]
    failed_after = [answer for answer in after_kill if answer.status != 200]
    served = Counter(answer.served_by for answer in answers if answer.status == 200)
    last_second = Counter(
        answer.served_by for answer in window(stop_at_s - 1, stop_at_s) if answer.status == 200
    )
    # What nginx saw fail and passed on to the next replica (refused, reset, closed early).
    nginx_errors = [
        line for line in (tmp_path / "error.log").read_text().splitlines() if "[error]" in line
    ]
    retried = [sum(f'upstream: "{url}/' in line for line in nginx_errors) for url in urls]
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(
        f"requests {len(answers)}; failed before the kill (graceful stop at {term_at_s} s) "
        f"{len(failed_before)}; failed after the kill at {kill_at_s} s {len(failed_after)}; "
        f"served per replica {[served[prefix] for prefix in prefixes]}; "
        f"last second per replica {[last_second[prefix] for prefix in prefixes]}; "
        f"requests nginx retried on another replica, per replica {retried}\n"
    )
    # All three served until the graceful stop; nothing failed because of it.
    assert all(served[prefix] > 50 for prefix in prefixes), served
    assert not failed_before, failed_before
    # At most the requests that were in flight on the killed replica (one per client) failed.
    assert len(failed_after) <= CLIENTS, failed_after
    # The graceful one took nothing after its drain; the survivor carries the traffic.
    graceful_prefix, _, survivor_prefix = prefixes
    assert not [a for a in window(term_at_s + 3, stop_at_s) if a.served_by == graceful_prefix]
    assert set(last_second) == {survivor_prefix}
    assert last_second[survivor_prefix] > 50
