"""TensorFlow Serving's REST API and KServe v2, driven by their real clients over TCP.

tritonclient (Triton's own HTTP client) speaks KServe v2 to the real server; TensorFlow Serving's
REST examples are replayed with httpx. One in-process test proves that every API feeds the same
batcher, and that a request of 64 instances reaches the model as one batch.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from app.config import Settings
from app.main import create_app
from tests.conftest import COMMITTED_MODEL_BASE
from tests.imaging import encode, paper_photo, png, printed, written_number
from tests.server import running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log) as url:
        yield url
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def served(base_url: str) -> dict[str, object]:
    return dict(httpx.get(f"{base_url}/model").json())


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(base_url.removeprefix("http://")) as triton_client:
        yield triton_client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def labels_of(probabilities: object) -> list[int]:
    return [int(np.argmax(row)) for row in np.asarray(probabilities)]


# ------------------------------------------------------------------------------------------
# KServe v2 with tritonclient


def test_server_and_model_readiness(client, served):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mnist")
    assert client.is_model_ready("mnist", str(served["version"]))
    assert not client.is_model_ready("mnist", "999")
    assert not client.is_model_ready("fashion")


def test_server_and_model_metadata(client, served):
    server = client.get_server_metadata()
    assert server["name"] == "cnn-serve"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    model = client.get_model_metadata("mnist")
    assert model["versions"] == [str(served["version"])]
    assert model["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert model["outputs"] == [
        {"name": "output_0", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "digit_check", "datatype": "BYTES", "shape": [-1]},
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_the_digit_check_says_what_is_not_one_digit(client, digits, binary):
    images, _ = digits
    uploads = [
        png(images[0]),
        printed("K", "DejaVuSerif.ttf"),
        written_number(images[1:3]),
    ]
    tensor = np.array(uploads if binary else [b64(data) for data in uploads], dtype=object)
    image = triton.InferInput("image", [3], "BYTES")
    image.set_data_from_numpy(tensor, binary_data=binary)
    check = triton.InferRequestedOutput("digit_check", binary_data=binary)
    result = client.infer("mnist", [image], outputs=[check])
    said = [item.decode() if binary else item for item in result.as_numpy("digit_check")]
    assert said == ["digit", "not_a_digit", "several_digits"]
    assert result.as_numpy("output_0") is None  # Only what was asked for.


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (28, 28), (784,)], ids=str)
def test_infer_fp32_model_inputs(client, digits, binary, shape):
    images, labels = digits
    batch = images[:8].astype(np.float32).reshape(8, *shape)
    image = triton.InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch, binary_data=binary)
    output = triton.InferRequestedOutput("output_0", binary_data=binary)
    result = client.infer("mnist", [image], outputs=[output], request_id="req-7")
    probabilities = result.as_numpy("output_0")
    assert probabilities.shape == (8, 10)
    assert probabilities.dtype == np.float32
    assert labels_of(probabilities) == list(labels[:8])
    assert result.get_response()["id"] == "req-7"


def test_infer_encoded_images_as_bytes(client, digits):
    images, labels = digits
    uploads = [png(images[0]), encode(paper_photo(images[1], side=300), "JPEG", quality=85)]
    for binary in (True, False):
        tensor = np.array(uploads if binary else [b64(data) for data in uploads], dtype=object)
        image = triton.InferInput("image", [2], "BYTES")
        image.set_data_from_numpy(tensor, binary_data=binary)
        result = client.infer("mnist", [image])  # No outputs named: all of them, binary.
        assert labels_of(result.as_numpy("output_0")) == list(labels[:2])


def test_classification_extension(client, digits, served):
    images, labels = digits
    image = triton.InferInput("image", [3, 28, 28, 1], "FP32")
    image.set_data_from_numpy(images[:3].astype(np.float32)[..., np.newaxis])
    for binary in (True, False):
        output = triton.InferRequestedOutput("output_0", binary_data=binary, class_count=3)
        classes = client.infer("mnist", [image], outputs=[output]).as_numpy("output_0")
        assert classes.shape == (3, 3)
        for row, label in zip(classes, labels[:3], strict=True):
            score, index, name = (row[0].decode() if binary else row[0]).split(":")
            assert int(index) == label
            assert name == served["labels"][label]
            assert 0.5 < float(score) <= 1


@pytest.mark.parametrize(
    ("name", "shape", "datatype", "message"),
    [
        ("pixels", [1, 28, 28], "FP32", "Unexpected inference input 'pixels'"),
        ("image", [1, 27, 27], "FP32", "each instance must be 28x28"),
        ("image", [1, 28, 28], "INT8", "datatype 'INT8'"),
    ],
)
def test_bad_inputs_are_inference_server_exceptions_with_our_message(
    client, name, shape, datatype, message
):
    tensor = triton.InferInput(name, shape, datatype)
    dtype = np.int8 if datatype == "INT8" else np.float32
    tensor.set_data_from_numpy(np.zeros(shape, dtype=dtype))
    with pytest.raises(InferenceServerException, match=message) as raised:
        client.infer("mnist", [tensor])
    assert raised.value.status() == "400"


def test_unknown_models_and_versions_are_404(client):
    tensor = triton.InferInput("image", [1, 784], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 784), np.float32))
    with pytest.raises(InferenceServerException, match="Latest\\(fashion\\)") as raised:
        client.infer("fashion", [tensor])
    assert raised.value.status() == "404"
    with pytest.raises(InferenceServerException, match="Specific\\(mnist, 999\\)"):
        client.infer("mnist", [tensor], model_version="999")


def test_an_undecodable_image_names_itself(client, digits):
    tensor = triton.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([png(digits[0][0]), b"junk"], dtype=object))
    with pytest.raises(InferenceServerException, match="Image 1: Not a decodable image"):
        client.infer("mnist", [tensor])


# ------------------------------------------------------------------------------------------
# TensorFlow Serving's REST API, its documented requests replayed with httpx


def test_tf_serving_row_format(base_url, digits):
    images, labels = digits
    body = {"signature_name": "serving_default", "instances": images[:4].tolist()}
    response = httpx.post(f"{base_url}/v1/models/mnist:predict", json=body)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert labels_of(predictions) == list(labels[:4])
    assert np.allclose(np.sum(predictions, axis=1), 1, atol=1e-4)


def test_tf_serving_columnar_format_and_named_inputs(base_url, digits):
    images, labels = digits
    flat = images[:3].reshape(3, 784).tolist()
    for inputs in (flat, {"image": flat}):
        body = httpx.post(f"{base_url}/v1/models/mnist:predict", json={"inputs": inputs}).json()
        assert list(body) == ["outputs"]
        assert labels_of(body["outputs"]) == list(labels[:3])
    named = {"instances": [{"image": image.tolist()} for image in images[:2]]}
    body = httpx.post(f"{base_url}/v1/models/mnist:predict", json=named).json()
    assert labels_of(body["predictions"]) == list(labels[:2])


def test_tf_serving_b64_images_versions_and_labels(base_url, digits, served):
    images, labels = digits
    photo = encode(paper_photo(images[5], side=400), "JPEG", quality=80)
    body = {"instances": [{"b64": b64(png(images[4]))}, {"b64": b64(photo)}]}
    version = served["version"]
    for path in ("mnist", f"mnist/versions/{version}"):
        response = httpx.post(f"{base_url}/v1/models/{path}:predict", json=body)
        assert labels_of(response.json()["predictions"]) == [labels[4], labels[5]]
    response = httpx.post(f"{base_url}/v1/models/mnist/labels/canary:predict", json=body)
    assert response.status_code == 404
    assert response.json() == {"error": "Unrecognized servable version label: canary"}


def test_tf_serving_classify(base_url, digits, served):
    images, labels = digits
    body = {"examples": [{"image": {"b64": b64(png(image))}} for image in images[:2]]}
    result = httpx.post(f"{base_url}/v1/models/mnist:classify", json=body).json()["result"]
    for ranked, label in zip(result, labels[:2], strict=True):
        assert len(ranked) == 10
        assert ranked[0][0] == served["labels"][label]
        assert ranked[0][1] == max(score for _, score in ranked)


def test_tf_serving_status_and_metadata(base_url, served):
    version = str(served["version"])
    status = httpx.get(f"{base_url}/v1/models/mnist").json()
    assert status == {
        "model_version_status": [
            {
                "version": version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    metadata = httpx.get(f"{base_url}/v1/models/mnist/versions/{version}/metadata").json()
    assert metadata["model_spec"] == {"name": "mnist", "signature_name": "", "version": version}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = signature["inputs"]["image"]["tensor_shape"]["dim"]
    assert [dim["size"] for dim in dims] == ["-1", "28", "28", "1"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    checked = metadata["metadata"]["signature_def"]["signature_def"]["digit_check"]
    assert sorted(checked["outputs"]) == ["digit_check", "output_0"]


def test_tfserving_digit_check_signature(base_url, digits):
    images, labels = digits
    number = written_number(images[1:3])
    instances = [{"b64": b64(png(images[0]))}, {"b64": b64(number)}]
    rows = {"signature_name": "digit_check", "instances": instances}
    predictions = httpx.post(f"{base_url}/v1/models/mnist:predict", json=rows).json()["predictions"]
    assert [row["digit_check"] for row in predictions] == ["digit", "several_digits"]
    assert np.argmax(predictions[0]["output_0"]) == labels[0]
    columns = {"signature_name": "digit_check", "inputs": instances}
    outputs = httpx.post(f"{base_url}/v1/models/mnist:predict", json=columns).json()["outputs"]
    assert outputs["digit_check"] == ["digit", "several_digits"]
    assert len(outputs["output_0"]) == 2
    classify = {"signature_name": "digit_check", "examples": [{"image": instances[0]}]}
    refused = httpx.post(f"{base_url}/v1/models/mnist:classify", json=classify)
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("mnist:predict", {"instances": [[1, 2]]}, 400, "each instance must be 28x28"),
        ("mnist:predict", {"instances": [], "inputs": []}, 400, "either 'instances'"),
        ("mnist:predict", {"signature_name": "train", "instances": []}, 400, '"train" not found'),
        ("mnist:predict", {"instances": [{"b64": "***"}]}, 400, "not valid base64"),
        ("mnist/versions/9:predict", {"instances": []}, 404, "Specific(mnist, 9)"),
        ("fashion:predict", {"instances": []}, 404, "Latest(fashion)"),
        ("mnist:regress", {"examples": []}, 400, "no regression signature"),
    ],
)
def test_tf_serving_errors(base_url, path, body, status, message):
    response = httpx.post(f"{base_url}/v1/models/{path}", json=body)
    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]


# ------------------------------------------------------------------------------------------
# One batcher for every API


class Recorder:
    """Wraps the model's runner: records the size of every batch, slowed a little so that
    concurrent requests meet in the queue."""

    def __init__(self, run: object, delay_s: float) -> None:
        self.run = run
        self.delay_s = delay_s
        self.batches: list[np.ndarray] = []
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(batch[..., 0].copy())
        time.sleep(self.delay_s)
        return self.run(batch)  # type: ignore[operator]


def test_every_api_shares_one_batcher(digits, compile_cache_dir: Path):
    images, _ = digits
    settings = Settings(model_base_dir=COMMITTED_MODEL_BASE, compile_cache_dir=compile_cache_dir)
    with TestClient(create_app(settings)) as client:
        registry = client.app_state["services"].inference.registry
        recorder = Recorder(registry.current.run, delay_s=0.05)
        registry.install(dataclasses.replace(registry.current, run=recorder))

        # 64 instances in one v2 request, with the model idle: one batch of 64.
        v2 = {"inputs": [{"name": "image", "shape": [64, 784], "datatype": "FP32"}]}
        v2["inputs"][0]["data"] = images[:64].reshape(-1).tolist()
        assert client.post("/v2/models/mnist/infer", json=v2).status_code == 200
        assert [len(batch) for batch in recorder.batches] == [64]

        # Then all three APIs at once, each with digits of its own: they share batches.
        recorder.batches.clear()

        def ours(image: np.ndarray) -> int:
            headers = {"content-type": "image/png"}
            return client.post("/predict", content=png(image), headers=headers).status_code

        def tf_serving(image: np.ndarray) -> int:
            body = {"instances": [image.tolist()]}
            return client.post("/v1/models/mnist:predict", json=body).status_code

        def kserve(image: np.ndarray) -> int:
            tensor = {"name": "image", "shape": [1, 28, 28], "datatype": "FP32"}
            body = {"inputs": [tensor | {"data": image.tolist()}]}
            return client.post("/v2/models/mnist/infer", json=body).status_code

        calls = [ours] * 10 + [tf_serving] * 10 + [kserve] * 10
        sent = images[100:130]
        with ThreadPoolExecutor(len(calls)) as pool:
            statuses = list(pool.map(lambda call, image: call(image), calls, sent))
    assert statuses == [200] * 30

    def api(row: np.ndarray) -> str:
        # /predict preprocesses its PNGs: the model input is the digit, give or take a pixel.
        nearest = int(np.abs(sent.astype(np.float32) - row).mean(axis=(1, 2)).argmin())
        return calls[nearest].__name__

    apis_per_batch = [{api(row) for row in batch} for batch in recorder.batches]
    assert sum(len(batch) for batch in recorder.batches) == 30
    assert len(recorder.batches) < 30
    assert any(len(apis) > 1 for apis in apis_per_batch), apis_per_batch
