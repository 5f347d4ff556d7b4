"""The gRPC server through the clients people use: `tritonclient.grpc` (sync and asyncio) for
KServe v2, TensorFlow Serving's own `tensorflow-serving-api` stubs, the standard health client and
server reflection, against `python -m app` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from app.rpc.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tests.conftest import COMMITTED_VERSION
from tests.imaging import encode, paper_photo, png, written_number
from tests.server import free_port, running_server, server_process

pytestmark = pytest.mark.slow
COUNT = 32


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(REST base URL, gRPC address) of a server with two workers sharing the gRPC port, and
    the version label `stable` on the served version."""
    port = free_port()
    folder = tmp_path_factory.mktemp("grpc")
    labels = folder / "labels.json"
    labels.write_text(json.dumps({"stable": COMMITTED_VERSION}))
    with running_server(
        folder / "server.log", workers="2", grpc_port=str(port), model_labels_file=str(labels)
    ) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def channel(served: tuple[str, str]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served[1]) as opened:
        yield opened


def float_tensor(values: np.ndarray) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in values.shape]
        ),
        tensor_content=values.astype("<f4").tobytes(),
    )


def probabilities_of(tensor: Any) -> np.ndarray:
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    return np.frombuffer(tensor.tensor_content, dtype="<f4").reshape(shape)


def photos(images: np.ndarray) -> list[bytes]:
    """Upload-like images: dark ink on light paper, as PNGs and as JPEG photos."""
    return [
        png(255 - image) if index % 2 else encode(paper_photo(image, side=200), "JPEG", quality=90)
        for index, image in enumerate(images)
    ]


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()  # type: ignore[no-any-return, attr-defined]


# KServe v2 through Triton's client.


def test_tritonclient_health_and_metadata(served: tuple[str, str]):
    client = triton.InferenceServerClient(served[1])
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mnist")
    assert client.is_model_ready("mnist", str(COMMITTED_VERSION))
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "cnn-serve"
    assert "classification" in server["extensions"]
    model = client.get_model_metadata("mnist", as_json=True)
    assert model["versions"] == [str(COMMITTED_VERSION)]
    assert model["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": ["-1", "28", "28", "1"]}
    ]
    assert model["outputs"][0]["shape"] == ["-1", "10"]
    index = client.get_model_repository_index(as_json=True)
    assert index["models"] == [
        {"name": "mnist", "version": str(COMMITTED_VERSION), "state": "READY"}
    ]
    with pytest.raises(InferenceServerException) as raised:
        client.is_model_ready("nope")
    assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_tritonclient_classifies_tensors_and_encoded_images(served: tuple[str, str], digits):
    images, labels = digits
    client = triton.InferenceServerClient(served[1])
    pixels = triton.InferInput("image", [COUNT, 28, 28, 1], "FP32")
    pixels.set_data_from_numpy(images[:COUNT, :, :, None].astype(np.float32))
    result = client.infer("mnist", [pixels], model_version=str(COMMITTED_VERSION), request_id="t1")
    probabilities = result.as_numpy("output_0")
    assert probabilities.shape == (COUNT, 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (probabilities.argmax(axis=1) == labels[:COUNT]).mean() >= 0.97
    assert result.get_response().id == "t1"

    uploads = triton.InferInput("image", [8], "BYTES")
    uploads.set_data_from_numpy(np.array(photos(images[:8]), dtype=object))
    best_two = triton.InferRequestedOutput("output_0", class_count=2)
    result = client.infer("mnist", [uploads], outputs=[best_two])
    classes = result.as_numpy("output_0")
    assert classes.shape == (8, 2)
    assert [int(row[0].decode().split(":")[1]) for row in classes] == list(labels[:8])


def test_the_digit_check_comes_with_the_probabilities(served: tuple[str, str], digits):
    images, labels = digits
    client = triton.InferenceServerClient(served[1])
    uploads = triton.InferInput("image", [2], "BYTES")
    number = written_number(images[1:3])
    uploads.set_data_from_numpy(np.array([png(images[0]), number], dtype=object))
    result = client.infer("mnist", [uploads])  # No output named: every output.
    assert result.as_numpy("output_0").argmax(axis=1)[0] == labels[0]
    assert list(result.as_numpy("digit_check")) == [b"digit", b"several_digits"]
    outputs = client.get_model_metadata("mnist").outputs
    assert [output.name for output in outputs] == ["output_0", "digit_check"]


def test_typed_contents_give_the_same_answer_as_raw(served: tuple[str, str], digits, channel):
    """Tensors in `contents` rather than `raw_input_contents` (clients other than Triton's)."""
    images, labels = digits
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=[4, 784])
    tensor.contents.fp32_contents.extend(images[:4].astype(np.float32).ravel().tolist())
    response = stub.ModelInfer(request)
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 10)
    assert list(typed.argmax(axis=1)) == list(labels[:4])

    request = service_pb2.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend(photos(images[:2]))
    response = stub.ModelInfer(request)
    encoded = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    assert list(encoded.argmax(axis=1)) == list(labels[:2])


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"model_name": "nope"}, "NOT_FOUND"),
        ({"model_version": "99"}, "NOT_FOUND"),
        ({"shape": [2, 28, 28]}, "INVALID_ARGUMENT"),  # One image's values for two.
        ({"input_name": "pixels"}, "INVALID_ARGUMENT"),
        ({"datatype": "INT8"}, "INVALID_ARGUMENT"),
        ({"image": b"not an image"}, "INVALID_ARGUMENT"),
        ({"shape": [65, 28, 28]}, "INVALID_ARGUMENT"),  # Over the per-request limit.
    ],
)
def test_bad_kserve_requests_get_the_status_that_says_why(
    served: tuple[str, str], digits, change: dict[str, Any], code: str
):
    images, _ = digits
    client = triton.InferenceServerClient(served[1])
    shape = change.get("shape", [1, 28, 28])
    if "image" in change:
        tensor = triton.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([change["image"]], dtype=object))
    else:
        tensor = triton.InferInput(
            change.get("input_name", "image"), shape, change.get("datatype", "FP32")
        )
        tensor._raw_content = images[:1].astype("<f4").tobytes()
    with pytest.raises(InferenceServerException) as raised:
        client.infer(
            change.get("model_name", "mnist"),
            [tensor],
            model_version=change.get("model_version", ""),
        )
    assert raised.value.status() == f"StatusCode.{code}", raised.value.message()


def test_tritonclient_asyncio(served: tuple[str, str], digits):
    images, labels = digits

    async def classify_concurrently() -> list[int]:
        client = triton_aio.InferenceServerClient(served[1])
        try:
            assert await client.is_server_ready()

            async def one(image: np.ndarray) -> int:
                tensor = triton_aio.InferInput("image", [1, 28, 28, 1], "FP32")
                tensor.set_data_from_numpy(image[None, :, :, None].astype(np.float32))
                result = await client.infer("mnist", [tensor])
                return int(result.as_numpy("output_0").argmax())

            return list(await asyncio.gather(*(one(image) for image in images[:COUNT])))
        finally:
            await client.close()

    answers = asyncio.run(classify_concurrently())
    assert (np.array(answers) == labels[:COUNT]).mean() >= 0.97


# TensorFlow Serving through its own stubs.


def test_tfserving_predict_tensors_and_images(channel, digits):
    images, labels = digits
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["image"].CopyFrom(float_tensor(images[:COUNT, :, :, None]))
    response, call = stub.Predict.with_call(
        request, timeout=10, metadata=[("x-request-id", "from-the-client")]
    )
    probabilities = probabilities_of(response.outputs["output_0"])
    assert probabilities.shape == (COUNT, 10)
    assert (probabilities.argmax(axis=1) == labels[:COUNT]).mean() >= 0.97
    assert response.model_spec.version.value == COMMITTED_VERSION
    assert response.model_spec.signature_name == "serving_default"
    trailers = dict(call.trailing_metadata())
    assert trailers["x-request-id"] == "from-the-client"
    assert trailers["x-model-version"] == str(COMMITTED_VERSION)

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.version_label = "stable"
    encoded = request.inputs["image"]
    encoded.dtype = types_pb2.DT_STRING
    encoded.tensor_shape.dim.add(size=8)
    encoded.string_val.extend(photos(images[:8]))
    response = stub.Predict(request, timeout=10)
    assert list(probabilities_of(response.outputs["output_0"]).argmax(axis=1)) == list(labels[:8])
    assert response.model_spec.version.value == COMMITTED_VERSION


def test_tfserving_digit_check_signature(channel, digits):
    images, _ = digits
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "digit_check"
    encoded = request.inputs["image"]
    encoded.dtype = types_pb2.DT_STRING
    encoded.tensor_shape.dim.add(size=2)
    encoded.string_val.extend([png(images[0]), written_number(images[1:3])])
    response = stub.Predict(request, timeout=10)
    assert list(response.outputs["digit_check"].string_val) == [b"digit", b"several_digits"]
    assert probabilities_of(response.outputs["output_0"]).shape == (2, 10)
    assert response.model_spec.signature_name == "digit_check"
    request.output_filter.append("digit_check")
    assert list(stub.Predict(request, timeout=10).outputs) == ["digit_check"]


def test_tfserving_classify_metadata_and_status(channel, digits):
    images, labels = digits
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "mnist"
    for image in images[:3]:
        example = request.input.example_list.examples.add()
        example.features.feature["image"].float_list.value.extend(image.ravel().tolist())
    example = request.input.example_list.examples.add()
    example.features.feature["image"].bytes_list.value.append(png(255 - images[3]))
    # Pixels and images do not mix in one request.
    assert code_of(lambda: stub.Classify(request)) == grpc.StatusCode.INVALID_ARGUMENT
    del request.input.example_list.examples[3]
    result = stub.Classify(request).result
    assert [int(row.classes[0].label) for row in result.classifications] == list(labels[:3])
    assert all(len(row.classes) == 10 for row in result.classifications)

    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "mnist"
    answer = stub.GetModelMetadata(metadata)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert [dim.size for dim in signature.inputs["image"].tensor_shape.dim] == [-1, 28, 28, 1]
    assert [dim.size for dim in signature.outputs["output_0"].tensor_shape.dim] == [-1, 10]

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "mnist"
    versions = models.GetModelStatus(status).model_version_status
    assert [(v.version, v.state, v.status.error_message) for v in versions] == [
        (COMMITTED_VERSION, get_model_status_pb2.ModelVersionStatus.AVAILABLE, "")
    ]
    status.model_spec.version_label = "stable"
    labelled = models.GetModelStatus(status).model_version_status
    assert [v.version for v in labelled] == [COMMITTED_VERSION]


def test_bad_tfserving_requests_get_the_status_that_says_why(channel, digits):
    images, _ = digits
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def predict(**spec: Any) -> Any:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = spec.pop("name", "mnist")
        if "version" in spec:
            request.model_spec.version.value = spec.pop("version")
        if "label" in spec:  # One or the other: they are a oneof.
            request.model_spec.version_label = spec.pop("label")
        request.model_spec.signature_name = spec.pop("signature", "")
        request.inputs[spec.pop("input", "image")].CopyFrom(
            spec.pop("tensor", float_tensor(images[:1]))
        )
        return lambda: stub.Predict(request, timeout=10)

    assert code_of(predict(name="nope")) == grpc.StatusCode.NOT_FOUND
    assert code_of(predict(version=99)) == grpc.StatusCode.NOT_FOUND
    assert code_of(predict(label="canary")) == grpc.StatusCode.NOT_FOUND
    assert code_of(predict(signature="classify_x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(predict(input="pixels")) == grpc.StatusCode.INVALID_ARGUMENT
    wrong_size = float_tensor(images[:1, :20])
    assert code_of(predict(tensor=wrong_size)) == grpc.StatusCode.INVALID_ARGUMENT
    not_finite = float_tensor(np.full((1, 28, 28), np.nan))
    assert code_of(predict(tensor=not_finite)) == grpc.StatusCode.INVALID_ARGUMENT
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"not an image"])
    text.tensor_shape.dim.add(size=1)
    assert code_of(predict(tensor=text)) == grpc.StatusCode.INVALID_ARGUMENT


def test_messages_over_the_body_limit_are_refused(served: tuple[str, str]):
    """The gRPC message limit is the REST batch body limit (64 MiB by default)."""
    with grpc.insecure_channel(
        served[1], options=[("grpc.max_send_message_length", 100 * 2**20)]
    ) as big:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(big)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.inputs["image"].CopyFrom(float_tensor(np.zeros((65 * 2**20 // 3136, 28, 28))))
        assert code_of(lambda: stub.Predict(request)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_passed_deadline_ends_the_call(channel, digits):
    images, _ = digits
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["image"].CopyFrom(float_tensor(np.repeat(images[:1], 64, axis=0)))
    assert code_of(lambda: stub.Predict(request, timeout=0.0005)) == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert stub.Predict(request, timeout=10).outputs["output_0"].tensor_shape.dim[0].size == 64


# Plumbing: health, reflection, workers, metrics.


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in (
        "",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "inference.GRPCInferenceService",
    ):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    unknown = health_pb2.HealthCheckRequest(service="nope")
    assert code_of(lambda: health.Check(unknown)) == grpc.StatusCode.NOT_FOUND

    reflected = ProtoReflectionDescriptorDatabase(channel)
    services = set(reflected.get_services())
    assert {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= services
    predict = reflected.FindFileContainingSymbol("tensorflow.serving.PredictionService")
    assert predict.name == "tensorflow_serving/apis/prediction_service.proto"


def test_both_workers_serve_the_one_port(served: tuple[str, str], digits):
    """Connections are spread over the workers; each worker's request ids have its own prefix."""
    images, _ = digits
    prefixes = set()
    for _ in range(16):
        # A channel of its own, not a share of the process-wide connection pool.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(served[1], options=options) as fresh:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(fresh)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mnist"
            request.inputs["image"].CopyFrom(float_tensor(images[:1]))
            _, call = stub.Predict.with_call(request, timeout=10)
            prefixes.add(dict(call.trailing_metadata())["x-request-id"].split("-")[0])
    assert len(prefixes) == 2


def test_metrics_count_grpc_calls_by_protocol(served: tuple[str, str], channel, digits):
    images, _ = digits
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["image"].CopyFrom(float_tensor(images[:1]))
    stub.Predict(request)
    triton.InferenceServerClient(served[1]).is_server_live()
    text = httpx.get(f"{served[0]}/metrics").text
    assert (
        'cnn_serve_requests_total{protocol="grpc-tfserving",'
        'route="/tensorflow.serving.PredictionService/Predict",status="OK"}'
    ) in text
    assert 'protocol="grpc-kserve",route="/inference.GRPCInferenceService/ServerLive"' in text


def test_overload_is_resource_exhausted_with_a_retry_hint(tmp_path: Path, digits):
    """With a budget of 1 ms, waves of 64-image calls past the learnt capacity are refused."""
    images, _ = digits
    port = free_port()
    batch = float_tensor(np.repeat(images[:1], 64, axis=0))

    async def wave(stub: Any) -> list[Any]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.inputs["image"].CopyFrom(batch)

        async def one() -> Any:
            call = stub.Predict(request, timeout=30)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                return error.code(), dict(error.trailing_metadata() or ())
            return grpc.StatusCode.OK, {}

        return list(await asyncio.gather(*(one() for _ in range(96))))

    async def flood() -> list[Any]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(opened)
            outcomes = []
            for _ in range(4):
                outcomes += await wave(stub)
            return outcomes

    with running_server(tmp_path / "server.log", grpc_port=str(port), overload_budget_ms="1"):
        outcomes = asyncio.run(flood())
    codes = {code for code, _ in outcomes}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    refused = [trailers for code, trailers in outcomes if code != grpc.StatusCode.OK]
    assert refused, "nothing was refused"
    assert len(refused) < len(outcomes)
    assert all(trailers["grpc-retry-pushback-ms"] == "1000" for trailers in refused)


def test_health_turns_not_serving_on_sigterm(tmp_path: Path):
    """The drain: NOT_SERVING at once, while calls are still answered until the grace ends."""
    port = free_port()
    with (
        server_process(tmp_path / "server.log", grpc_port=str(port), shutdown_grace_s="3") as (
            _,
            process,
        ),
        grpc.insecure_channel(f"127.0.0.1:{port}") as opened,
    ):
        health = health_pb2_grpc.HealthStub(opened)
        request = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        assert health.Check(request).status == health_pb2.HealthCheckResponse.SERVING
        os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2
        while health.Check(request).status == health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "still SERVING after SIGTERM"
            time.sleep(0.05)
        assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live()
        assert not client.is_server_ready()
        # Then, after the grace, the server stops.
        assert process.wait(20) == 0
