"""The Docker image and docker-compose.yml, built and run for real.

Needs a Docker-compatible engine (`docker compose` talking to Docker or to podman's socket, as
`.ci/run` sets up). Without one these tests are skipped, saying why; under CI they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.rpc.protos import predict_pb2, prediction_service_pb2_grpc, types_pb2
from tests.imaging import png
from tests.server import REPO, free_port, wait_until_ready

pytestmark = pytest.mark.container

PROJECT = "cnnservetest"


def engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    for command in (["docker", "compose", "version"], ["docker", "info"]):
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            return f"`{' '.join(command)}` failed: no container engine reachable ({error})"
    return None


GRPC_PORTS: dict[int, int] = {}  # The host's gRPC port beside each REST port.


def compose(*args: str, port: int, check: bool = True) -> subprocess.CompletedProcess[str]:
    grpc_port = GRPC_PORTS.setdefault(port, free_port())
    env = {
        **os.environ,
        "CNN_SERVE_HOST_PORT": str(port),
        "CNN_SERVE_HOST_GRPC_PORT": str(grpc_port),
    }
    return subprocess.run(
        ["docker", "compose", "-p", PROJECT, *args],
        cwd=REPO,
        env=env,
        check=check,
        capture_output=True,
        text=True,
        timeout=1500,
    )


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, int]]:
    problem = engine_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests: {problem}")
        pytest.skip(problem)
    port = free_port()
    try:
        built = compose("up", "-d", "--build", port=port, check=False)
        assert built.returncode == 0, built.stdout + built.stderr
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, None, timeout_s=180)
        yield base_url, port
    finally:
        logs = compose("logs", port=port, check=False).stdout
        compose("down", "--volumes", "--timeout", "10", port=port, check=False)
        assert "Traceback" not in logs, logs


def test_container_serves_predictions(service, digits):
    base_url, _ = service
    images, labels = digits
    with httpx.Client(base_url=base_url, timeout=30) as client:
        predicted = [
            client.post("/predict", files={"file": ("d.png", png(image), "image/png")}).json()
            for image in images[:30]
        ]
        hits = [p["label"] == str(label) for p, label in zip(predicted, labels, strict=False)]
        assert np.mean(hits) >= 0.96
        raw = client.post("/predict", content=png(images[0]), headers={"content-type": "image/png"})
        assert raw.json()["label"] == str(labels[0])
        assert client.get("/model").json()["name"] == "mnist"


def test_container_error_paths(service):
    base_url, _ = service
    with httpx.Client(base_url=base_url) as client:
        garbage = client.post("/predict", content=b"junk", headers={"content-type": "image/png"})
        assert garbage.status_code == 400
        assert client.post("/predict", json={}).status_code == 415


def test_container_serves_grpc(service, digits):
    """The image's gRPC port, published by compose: Triton's client, TensorFlow Serving's stub
    and the standard health service."""
    _, port = service
    address = f"127.0.0.1:{GRPC_PORTS[port]}"
    images, labels = digits
    client = triton.InferenceServerClient(address)
    assert client.is_server_ready()
    tensor = triton.InferInput("image", [8], "BYTES")
    tensor.set_data_from_numpy(np.array([png(255 - image) for image in images[:8]], dtype=object))
    probabilities = client.infer("mnist", [tensor]).as_numpy("output_0")
    assert list(probabilities.argmax(axis=1)) == list(labels[:8])
    with grpc.insecure_channel(address) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        pixels = request.inputs["image"]
        pixels.dtype = types_pb2.DT_FLOAT
        for size in (8, 28, 28, 1):
            pixels.tensor_shape.dim.add(size=size)
        pixels.tensor_content = images[:8].astype("<f4").tobytes()
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        output = answer.outputs["output_0"]
        predicted = np.frombuffer(output.tensor_content, dtype="<f4").reshape(8, 10).argmax(1)
        assert list(predicted) == list(labels[:8])
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def inspect(container: str) -> dict[str, Any]:
    result = subprocess.run(
        ["docker", "inspect", container], check=True, capture_output=True, text=True, timeout=30
    )
    return dict(json.loads(result.stdout)[0])


def test_container_healthcheck_and_user(service):
    _, port = service
    container = compose("ps", "-q", "cnn-serve", port=port).stdout.strip()
    inspected = inspect(container)
    deadline = time.monotonic() + 90
    while inspected["State"].get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, inspected["State"]
        time.sleep(2)
        inspected = inspect(container)
    assert inspected["Config"]["User"] == "10001:10001"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert "app.healthcheck" in " ".join(inspected["Config"]["Healthcheck"]["Test"])
    assert inspected["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    probe = subprocess.run(
        ["docker", "exec", container, "python", "-m", "app.healthcheck"],
        capture_output=True,
        timeout=30,
    )
    assert probe.returncode == 0
    # Read-only root filesystem; the compile cache volume and /tmp stay writable.
    for path, writable in (("/srv/app/x", False), ("/srv/cache/x", True), ("/tmp/x", True)):
        touched = subprocess.run(
            ["docker", "exec", container, "touch", path], capture_output=True, timeout=30
        )
        assert (touched.returncode == 0) is writable, (path, touched.stderr)


def test_compose_train_profile_publishes_a_version_the_service_picks_up(tmp_path, digits):
    """`docker compose run train` writes a new version into the mounted models directory, and
    the running service serves it without a restart."""
    problem = engine_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests: {problem}")
        pytest.skip(problem)
    images, labels = digits
    models = tmp_path / "models"
    shutil.copytree(REPO / "model" / "export", models)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(
        data / "mnist.npz",
        x_train=images[:240],
        y_train=labels[:240],
        x_test=images[240:],
        y_test=labels[240:],
    )
    for path in (models, *models.rglob("*"), data, *data.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)  # The container's user is 10001.
    newest = max(int(path.name) for path in (models / "mnist").iterdir() if path.name.isdigit())
    port = free_port()
    env = {**os.environ, "CNN_SERVE_MODEL_DIR": str(models), "CNN_SERVE_DATA_DIR": str(data)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", "-p", f"{PROJECT}train", *args],
            cwd=REPO,
            env={
                **env,
                "CNN_SERVE_HOST_PORT": str(port),
                "CNN_SERVE_HOST_GRPC_PORT": str(free_port()),
            },
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )

    try:
        started = run("up", "-d", "--build", "cnn-serve")
        assert started.returncode == 0, started.stdout + started.stderr
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, None, timeout_s=180)
        assert httpx.get(f"{base_url}/health/ready").json()["model"]["version"] == newest
        trained = run(
            "--profile",
            "train",
            "run",
            "--rm",
            "train",
            "--data",
            "/data/mnist.npz",
            "--epochs",
            "1",
            "--rendered-uploads",
            "0",
            "--validation-size",
            "40",
        )
        assert trained.returncode == 0, trained.stdout + trained.stderr
        assert (models / "mnist" / str(newest + 1) / "saved_model.pb").exists()
        deadline = time.monotonic() + 180
        while httpx.get(f"{base_url}/health/ready").json()["model"]["version"] != newest + 1:
            assert time.monotonic() < deadline, run("logs").stdout[-3000:]
            time.sleep(1)
    finally:
        run("--profile", "train", "down", "--volumes", "--timeout", "10")
