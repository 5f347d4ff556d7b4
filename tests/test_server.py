"""End to end: the real server (`python -m app`, uvicorn on 127.0.0.1) driven over TCP by httpx."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cnn_serve.retrying import RetryAfterAsyncTransport
from model import evaluate
from tests.imaging import encode, paper_photo, png
from tests.server import REPO, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log, max_upload_bytes="1000000") as url:
        yield url
    assert "Traceback" not in log.read_text(), log.read_text()


def test_ready_and_model(base_url: str):
    assert httpx.get(f"{base_url}/health/ready").json()["status"] == "ready"
    assert httpx.get(f"{base_url}/model").json()["labels"][7] == "7"


def test_concurrent_predictions_get_their_own_labels(base_url: str, digits):
    images, labels = digits

    async def classify_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=32)
        transport = RetryAfterAsyncTransport(httpx.AsyncHTTPTransport(limits=limits))
        async with httpx.AsyncClient(base_url=base_url, timeout=30, transport=transport) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/predict", content=png(image), headers={"content-type": "image/png"}
                    )
                    if index % 2
                    else client.post("/predict", files={"file": (f"{index}.png", png(image))})
                    for index, image in enumerate(images)
                )
            )

    responses = asyncio.run(classify_all())
    assert all(response.status_code == 200 for response in responses)
    predicted = np.array([int(response.json()["label"]) for response in responses])
    assert np.mean(predicted == labels) >= 0.99
    # Each answer is for its own image: the confident ones match their labels one for one.
    confident = np.array([response.json()["confidence"] > 0.99 for response in responses])
    assert np.all(predicted[confident] == labels[confident])


def test_two_workers_share_one_compile_and_both_serve(tmp_path: Path, digits):
    images, labels = digits
    cache = tmp_path / "cache"
    log = tmp_path / "server.log"
    with (
        running_server(log, workers="2", compile_cache_dir=str(cache), runtime="litert") as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        predicted = [
            client.post("/predict", files={"file": ("d.png", png(image))}).json()["label"]
            for image in images[:40]
        ]
    assert predicted == [str(label) for label in labels[:40]]
    assert len(list(cache.glob("*.tflite"))) == 1
    # Compiled once before the workers started; both workers read the cache.
    text = log.read_text()
    assert text.count("Compiled ") == 1, text
    assert text.count("Using the compiled model cached in") == 2, text


def test_checked_int8_weights_start_without_compiling(tmp_path: Path, digits):
    images, labels = digits
    cache = tmp_path / "cache"
    with (
        running_server(tmp_path / "server.log", workers="2", compile_cache_dir=str(cache)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        assert client.get("/model").json()["runtime"] == "litert-int8"
        label = client.post("/predict", files={"file": ("d.png", png(images[0]))}).json()["label"]
    assert label == str(labels[0])
    assert not list(cache.glob("*.tflite"))


def test_jpeg_photo_upload(base_url: str, digits):
    images, labels = digits
    photo = encode(paper_photo(images[5]).convert("RGB"), "JPEG", quality=80)
    response = httpx.post(f"{base_url}/predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 200
    assert response.json()["label"] == str(labels[5])


def test_batch_endpoint(base_url: str, digits):
    images, labels = digits
    files = [("files", (f"{i}.png", png(images[i]), "image/png")) for i in range(8)]
    files.insert(3, ("files", ("bad.png", b"nope", "image/png")))
    results = httpx.post(f"{base_url}/predict/batch", files=files).json()["results"]
    assert len(results) == 9
    assert results[3]["error"]["code"] == "invalid_image"
    good = [r for i, r in enumerate(results) if i != 3]
    assert [r["prediction"]["label"] for r in good] == [str(label) for label in labels[:8]]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"junk", "headers": {"content-type": "image/png"}}, 400, "invalid_image"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "invalid_image"),
        (
            {"content": b"\0" * 1_000_001, "headers": {"content-type": "image/png"}},
            413,
            "payload_too_large",
        ),
        (
            {"content": b"abc", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"files": {"wrong": ("a.png", b"abc")}}, 422, "invalid_request"),
    ],
    ids=["garbage", "empty", "too-large", "text", "no-file-field"],
)
def test_error_paths(base_url: str, kwargs, status, code):
    response = httpx.post(f"{base_url}/predict", **kwargs)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_chunked_upload_over_the_limit_is_cut_off(base_url: str):
    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"\0" * 65536

    try:
        response = httpx.post(
            f"{base_url}/predict", content=chunks(), headers={"content-type": "image/png"}
        )
    except httpx.TransportError:
        pass  # The server may close the connection before the client finishes sending.
    else:
        assert response.status_code == 413
    assert httpx.get(f"{base_url}/health/live").status_code == 200


def test_missing_model_exits_non_zero_with_one_clear_line(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "CNN_SERVE_MODEL_BASE_DIR": str(tmp_path),
            "CNN_SERVE_PORT": "1",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert result.returncode != 0
    assert f"Cannot start: no model versions under {tmp_path}/mnist" in result.stderr


def listening_sockets(port: int) -> int:
    """TCP sockets listening on `port` on this machine (state 0A in /proc/net/tcp)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A"
    )


def test_each_worker_listens_on_its_own_socket_and_both_get_connections(tmp_path: Path, digits):
    """SO_REUSEPORT: the kernel hashes each new connection to one worker's socket, so a burst of
    keep-alive connections is spread over the workers whatever either is doing (with one shared
    socket, whichever worker's loop is idle accepts them all)."""

    async def one_connection(url: str) -> str:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post("/predict", files={"file": ("d.png", png(digits[0][0]))})
            return response.headers["x-request-id"].split("-")[0]  # A prefix per worker.

    async def connections(url: str) -> list[str]:
        return await asyncio.gather(*(one_connection(url) for _ in range(64)))

    with running_server(tmp_path / "server.log", workers="2") as url:
        assert listening_sockets(int(url.rsplit(":", 1)[1])) == 2
        prefixes = asyncio.run(connections(url))
    shares = sorted(prefixes.count(prefix) for prefix in set(prefixes))
    assert len(shares) == 2, shares
    assert shares[0] >= 16, shares  # Binomial(64, 1/2) is below 16 once in ~30,000 runs.


def test_a_port_in_use_is_refused_at_once_with_one_clear_line(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={"CNN_SERVE_PORT": str(port), "CNN_SERVE_WORKERS": "2", "PATH": "/usr/bin:/bin"},
        )
    assert result.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr


def table_of(report: str) -> str:
    """The accuracy table, the calibration error and the confusions, without the lines about
    timing and files, and without the model's own calibration error (in-process only)."""
    table = report[report.index("category") :].split("\nContact sheet")[0]
    return "\n".join(line for line in table.splitlines() if "the model's own" not in line)


def test_evaluating_uploads_over_http_agrees_with_in_process(
    digits, tmp_path: Path, capsys, monkeypatch, compile_cache_dir: Path
):
    """`python -m model.evaluate --uploads --url ...` scores what the service really answers,
    and it answers what the service's own preprocessing and model give in-process."""
    monkeypatch.setenv("CNN_SERVE_COMPILE_CACHE_DIR", str(compile_cache_dir))
    images, labels = digits
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=images[:1], y_train=labels[:1], x_test=images, y_test=labels)
    common = ["--uploads", "--data", str(data), "--per-category", "4", "--workers", "1"]
    sheet, diagram = tmp_path / "failures.png", tmp_path / "reliability.png"
    # The service's default limits: a full-resolution camera photo is over a megabyte.
    with running_server(tmp_path / "server.log") as url:
        over_http = evaluate.main(
            [*common, "--url", url, "--failures", str(sheet), "--reliability", str(diagram)]
        )
    http_report = capsys.readouterr().out
    in_process = evaluate.main(common)
    process_report = capsys.readouterr().out
    assert over_http == in_process
    assert table_of(http_report) == table_of(process_report)
    assert "over HTTP" in http_report
    assert "in-process" in process_report
    assert "the model's own probabilities, before calibration" in process_report
    assert sheet.exists()
    assert diagram.exists()
