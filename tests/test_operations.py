"""Operating the real server: metrics that add up across workers, JSON logs with request ids,
and a SIGTERM under load that every admitted request survives."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.__main__ import default_metrics_dir
from tests.imaging import png
from tests.server import running_server, server_process

pytestmark = pytest.mark.slow


def scraped(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by name and labels."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):  # type: ignore[no-untyped-def]
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and set(labels.items()) <= set(sample_labels)
    )


def test_metrics_of_two_workers_add_up(tmp_path: Path, digits):
    images, labels = digits
    requests = 40
    with running_server(tmp_path / "server.log", workers="2") as url:
        request_ids = set()
        for image in images[:requests]:
            # A new connection per request, so both workers get some.
            response = httpx.post(
                f"{url}/predict",
                files={"file": ("d.png", png(image))},
                headers={"connection": "close"},
            )
            assert response.status_code == 200
            request_ids.add(response.headers["x-request-id"].split("-")[0])
        assert len(request_ids) == 2, "both workers answered (each has its own id prefix)"
        # Whichever worker answers the scrape, it reports both workers' counts.
        for _ in range(4):
            samples = scraped(url)
            assert total(samples, "cnn_serve_requests_total", route="/predict", status="200") == (
                requests
            )
            assert total(samples, "cnn_serve_predictions_total") == requests
            assert total(samples, "cnn_serve_batch_size_sum") == requests
            assert total(samples, "cnn_serve_request_duration_seconds_count", route="/predict") == (
                requests
            )
            assert total(samples, "cnn_serve_model_info", version="2") == 1
            assert total(samples, "cnn_serve_model_reloads_total", result="loaded") >= 2
            assert total(samples, "cnn_serve_queue_depth") == 0
        predicted = Counter(str(label) for label in labels[:requests])
        for label, count in predicted.items():
            # The committed model gets these 40 digits right.
            assert total(samples, "cnn_serve_predictions_total", label=label) == count
        bad = httpx.post(f"{url}/predict", content=b"not an image")
        assert bad.status_code == 415 or bad.status_code == 400
        assert total(scraped(url), "cnn_serve_rejected_requests_total") == 1


def test_json_logs_carry_the_request_id_and_no_client_strings_raw(tmp_path: Path, digits):
    images, _ = digits
    log = tmp_path / "server.log"
    with running_server(log, log_format="json", access_log="true") as url:
        given = httpx.post(
            f"{url}/predict",
            files={"file": ('evil"\n{name}.png', png(images[0]))},
            headers={"x-request-id": "client-id.42"},
        )
        assert given.headers["x-request-id"] == "client-id.42"
        assert given.headers["x-model-version"] == "2"
        replaced = httpx.post(
            f"{url}/predict/unknown%0Aline",
            headers={"x-request-id": "has spaces and {braces}" + "x" * 200},
        )
        generated = replaced.headers["x-request-id"]
        assert generated
        assert " " not in generated
        assert len(generated) <= 128
        httpx.get(f"{url}/health/ready", headers={"x-request-id": "r" * 129})
    lines = log.read_text().splitlines()
    # LiteRT's C++ library writes this one line to stderr itself, past Python's logging.
    native = [line for line in lines if line.startswith("INFO: Created TensorFlow Lite")]
    assert len(native) <= 1
    entries = [json.loads(line) for line in lines if line not in native]
    assert entries, "every other line is one JSON object"
    access = {entry["request_id"]: entry for entry in entries if entry["logger"] == "app.access"}
    answered = access["client-id.42"]
    assert (answered["method"], answered["route"], answered["status"]) == ("POST", "/predict", 200)
    assert answered["model_version"] == 2
    assert answered["duration_ms"] > 0
    assert "decode;dur=" in answered["server_timing"]
    # An unmatched path is logged as such, never as the path the client chose.
    assert access[generated]["route"] == "unmatched"
    assert access[generated]["status"] == 404
    assert "r" * 129 not in access
    text = log.read_text()
    assert "evil" not in text
    assert "{braces}" not in text


async def _clients(url: str, data: bytes, until: asyncio.Event, outcomes: Counter[str]) -> None:
    """Sixteen clients posting back to back until `until` is set (a load balancer that has
    noticed the readiness change stops sending)."""

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while not until.is_set():
                try:
                    response = await client.post(
                        "/predict", content=data, headers={"content-type": "image/png"}
                    )
                except httpx.TransportError as error:
                    outcomes[f"failed: {error!r}"] += 1
                    return
                outcomes[str(response.status_code)] += 1

    await asyncio.gather(*(one_client() for _ in range(16)))


async def _slow_upload(url: str, data: bytes, seconds: float) -> httpx.Response:
    """A request whose body takes `seconds` to arrive: in flight when the server stops."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in (data[: len(data) // 2], data[len(data) // 2 :]):
            await asyncio.sleep(seconds / 2)
            yield chunk

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post(
            "/predict",
            content=body(),
            headers={"content-type": "image/png", "content-length": str(len(data))},
        )


@dataclass
class Shutdown:
    signalled: float
    not_ready_after_s: float
    in_flight_at_the_end: httpx.Response


async def _until_not_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while (await client.get("/health/ready")).status_code == 200:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_answers_every_admitted_request(tmp_path: Path, digits, workers: str):
    """SIGTERM under load: readiness 503 at once, every request sent during the grace answered,
    a request still arriving when the grace ends finished, then connections refused, and the
    process gone within the bound."""
    images, _ = digits
    data = png(images[0])
    grace_s, timeout_s = 2.0, 10
    outcomes: Counter[str] = Counter()
    log = tmp_path / "server.log"
    with server_process(
        log, workers=workers, shutdown_grace_s=str(grace_s), shutdown_timeout_s=str(timeout_s)
    ) as (url, process):

        def since_signal() -> float:
            return time.monotonic() - signalled

        async def scenario() -> Shutdown:
            nonlocal signalled
            noticed = asyncio.Event()
            load = asyncio.create_task(_clients(url, data, noticed, outcomes))
            await asyncio.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await _until_not_ready(url)
            not_ready_after_s = since_signal()
            # Sending stops half-way through the grace, as a load balancer would.
            await asyncio.sleep(grace_s / 2 - since_signal())
            noticed.set()
            await load
            # Started before the grace ends, its body still arriving after it.
            await asyncio.sleep(grace_s - 0.5 - since_signal())
            in_flight = await _slow_upload(url, data, seconds=1.5)
            await asyncio.sleep(grace_s + 0.5 - since_signal())
            # No new request is served: refused, or (several workers) accepted by the kernel on
            # the socket uvicorn's supervisor holds until its workers are gone, then closed.
            async with httpx.AsyncClient(base_url=url) as client:
                with pytest.raises(
                    (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)
                ):
                    await client.get("/health/live")
            return Shutdown(signalled, not_ready_after_s, in_flight)

        signalled = 0.0
        shutdown = asyncio.run(scenario())
        process.wait(grace_s + timeout_s + 5)
        exited_after_s = since_signal()
    assert shutdown.not_ready_after_s < 0.5, "readiness turns 503 at once"
    assert set(outcomes) == {"200"}, outcomes
    assert outcomes["200"] > 100
    assert shutdown.in_flight_at_the_end.status_code == 200
    assert exited_after_s < grace_s + timeout_s, "exits within the bound"
    assert process.returncode == 0
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("workers", "stop"), [("1", signal.SIGTERM), ("1", signal.SIGINT), ("2", signal.SIGTERM)]
)
def test_a_stopped_server_exits_0_and_removes_its_metrics_directory(
    tmp_path: Path, workers: str, stop: signal.Signals
):
    log = tmp_path / "server.log"
    with server_process(log, workers=workers) as (_, process):
        metrics_dir = default_metrics_dir(process.pid)
        assert list(metrics_dir.glob("*.db")), "the workers keep their values there"
        process.send_signal(stop)
        process.wait(20)
    assert process.returncode == 0
    assert not metrics_dir.exists()
    assert "Traceback" not in log.read_text()
