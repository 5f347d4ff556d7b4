"""The HTTP API in-process: the real app with its lifespan entered and the committed model."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from app.model_format import ModelLoadError
from app.preprocess import preprocess
from tests.conftest import COMMITTED_MODEL_BASE, COMMITTED_VERSION
from tests.imaging import canvas_drawing, encode, paper_photo, png, printed, written_number

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def make_settings(compile_cache_dir: Path):
    def settings(**overrides: object) -> Settings:
        return Settings(
            model_base_dir=COMMITTED_MODEL_BASE,
            compile_cache_dir=compile_cache_dir,
            **overrides,  # type: ignore[arg-type]
        )

    return settings


@pytest.fixture(scope="module")
def client(make_settings) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(max_upload_bytes=200_000))) as test_client:
        yield test_client


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text


def test_live(client: TestClient):
    assert client.get("/health/live").json() == {"status": "alive"}


def test_ready(client: TestClient):
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = {"status": "ready", "model": {"name": "mnist", "version": COMMITTED_VERSION}}
    assert response.json() == body


def test_model_metadata(client: TestClient):
    info = client.get("/model").json()
    assert info["name"] == "mnist"
    assert info["version"] == COMMITTED_VERSION
    assert info["versions_available"][-1] == COMMITTED_VERSION
    assert info["versions_served"] == [COMMITTED_VERSION]
    assert info["version_status"][str(COMMITTED_VERSION)] == {
        "state": "AVAILABLE",
        "error_message": "",
    }
    assert info["labels"] == [str(digit) for digit in range(10)]
    assert info["input"]["shape"] == [None, 28, 28, 1]
    assert info["preprocessing"] == "mnist"
    assert info["runtime"] == "litert-int8"
    assert "checked on all 10,000 test images" in info["runtime_reason"]
    assert info["test_accuracy"] >= 0.996
    # The served probabilities' temperature, and what it did where it was fitted.
    calibration = info["calibration"]
    assert calibration["temperature"] > 1
    assert (
        calibration["after"]["negative_log_likelihood"]
        < (calibration["before"]["negative_log_likelihood"])
    )
    assert info["batching"]["max_batch_size"] == 64
    assert info["limits"]["max_upload_bytes"] == 200_000


def test_predict_multipart(client: TestClient, digits):
    images, labels = digits
    response = client.post("/predict", files={"file": ("digit.png", png(images[0]), "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == str(labels[0])
    assert list(body["probabilities"]) == [str(digit) for digit in range(10)]
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert body["confidence"] == max(body["probabilities"].values())
    assert body["probabilities"][body["label"]] == body["confidence"]
    assert body["model"] == {"name": "mnist", "version": COMMITTED_VERSION}


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "image/x-foo"])
def test_predict_raw_body(client: TestClient, digits, content_type):
    images, labels = digits
    response = client.post(
        "/predict", content=png(images[1]), headers={"content-type": content_type}
    )
    assert response.status_code == 200
    assert response.json()["label"] == str(labels[1])


def test_raw_and_multipart_agree(client: TestClient, digits):
    data = png(digits[0][2])
    raw = client.post("/predict", content=data, headers={"content-type": "image/png"}).json()
    form = client.post("/predict", files={"file": ("d.png", data, "image/png")}).json()
    assert raw == form


def test_server_timing_header(client: TestClient, digits):
    response = client.post(
        "/predict", content=png(digits[0][3]), headers={"content-type": "image/png"}
    )
    timing = response.headers["server-timing"]
    for part in ("decode;dur=", "queue;dur=", "inference;dur="):
        assert part in timing


def test_fixture_digits_are_classified_correctly(client: TestClient, digits):
    images, labels = digits
    predicted = [
        client.post("/predict", content=png(image), headers={"content-type": "image/png"}).json()[
            "label"
        ]
        for image in images[:60]
    ]
    accuracy = np.mean([p == str(label) for p, label in zip(predicted, labels[:60], strict=True)])
    assert accuracy >= 0.98


def test_real_world_uploads(client: TestClient, digits):
    """A paper photo as JPEG and a transparent canvas drawing come out with the right label."""
    images, labels = digits
    hits = 0
    for image, label in zip(images[:20], labels[:20], strict=True):
        photo = encode(paper_photo(image, seed=int(label)), "JPEG", quality=75)
        drawing = encode(canvas_drawing(image))
        for data in (photo, drawing):
            body = client.post("/predict", files={"file": ("x", data, "image/jpeg")}).json()
            hits += body["label"] == str(label)
    assert hits >= 38


def decode_model_input(explain: dict[str, object]) -> np.ndarray:
    png_bytes = base64.b64decode(str(explain["input_png"]))
    image = Image.open(io.BytesIO(png_bytes))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    return np.asarray(image)


def test_explain_shows_what_the_model_saw(client: TestClient, digits):
    images, labels = digits
    data = encode(paper_photo(images[4], side=300), "JPEG", quality=80)
    response = client.post("/predict?explain=true", files={"file": ("photo.jpg", data)})
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == str(labels[4])
    explain = body["explain"]
    expected = np.round(preprocess(data)).astype(np.uint8)
    np.testing.assert_array_equal(decode_model_input(explain), expected)
    assert explain["inverted"] is True
    box = explain["crop_box"]
    assert 0 <= box["left"] < box["right"] <= 300
    assert 0 <= box["top"] < box["bottom"] <= 300
    side = max(box["right"] - box["left"], box["bottom"] - box["top"])
    assert explain["scale"] == pytest.approx(20 / side, rel=0.02)


def test_explain_is_off_by_default_and_validated(client: TestClient, digits):
    data = png(digits[0][0])
    for url in ("/predict", "/predict?explain=false", "/predict?explain=0"):
        body = client.post(url, content=data, headers={"content-type": "image/png"}).json()
        assert "explain" not in body
    response = client.post(
        "/predict?explain=maybe", content=data, headers={"content-type": "image/png"}
    )
    assert_error(response, 422, "invalid_request")


def test_explain_in_a_batch_covers_every_prediction(client: TestClient, digits):
    images, _ = digits
    files = [("files", (f"{i}.png", png(images[i]), "image/png")) for i in range(3)]
    results = client.post("/predict/batch?explain=1", files=files).json()["results"]
    for index, result in enumerate(results):
        assert not result["prediction"]["explain"]["inverted"]
        model_input = decode_model_input(result["prediction"]["explain"])
        np.testing.assert_array_equal(model_input, images[index])


def test_batch_endpoint_reports_each_file(client: TestClient, digits):
    images, labels = digits
    files = [
        ("files", ("a.png", png(images[0]), "image/png")),
        ("files", ("broken.png", b"garbage", "image/png")),
        ("files", ("b.png", png(images[1]), "image/png")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.png", "broken.png", "b.png"]
    assert results[0]["prediction"]["label"] == str(labels[0])
    assert results[0]["error"] is None
    assert results[1]["prediction"] is None
    assert results[1]["error"]["code"] == "invalid_image"
    assert results[2]["prediction"]["label"] == str(labels[1])


LETTER_A = "DejaVuSerif-Bold.ttf"  # A font the detector was not trained on.


def test_a_printed_letter_is_not_a_digit(client: TestClient, digits):
    response = client.post(
        "/predict", files={"file": ("a.png", printed("A", LETTER_A), "image/png")}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["is_digit"] is False
    assert body["reason"] == "not_a_digit"
    assert body["label"] in body["probabilities"]  # The model's guess is still there.
    digit = client.post(
        "/predict", content=png(digits[0][0]), headers={"content-type": "image/png"}
    )
    assert digit.json()["is_digit"] is True
    assert "reason" not in digit.json()
    metrics = client.get("/metrics").text
    assert 'cnn_serve_not_one_digit_total{reason="not_a_digit"}' in metrics


def test_non_digits_can_be_refused(digits, make_settings):
    images, _ = digits
    number = written_number(images[:2])
    with TestClient(create_app(make_settings(non_digits="refuse"))) as refusing:
        letter = refusing.post("/predict", files={"file": ("A.png", printed("A", LETTER_A))})
        assert_error(letter, 422, "not_a_digit")
        files = [
            ("files", ("7.png", png(images[0]), "image/png")),
            ("files", ("42.png", number, "image/png")),
            ("files", ("A.png", printed("A", LETTER_A), "image/png")),
        ]
        results = refusing.post("/predict/batch", files=files).json()["results"]
    assert results[0]["prediction"]["is_digit"] is True
    assert [result["error"] and result["error"]["code"] for result in results] == [
        None,
        "several_digits",
        "not_a_digit",
    ]


def test_the_detector_can_be_turned_off(digits, make_settings):
    with TestClient(create_app(make_settings(non_digits="off"))) as unchecked:
        body = unchecked.post("/predict", files={"file": ("A.png", printed("A", LETTER_A))}).json()
    assert body["is_digit"] is None
    assert body["label"] in body["probabilities"]


def test_batch_file_count_is_bounded(digits, make_settings):
    with TestClient(create_app(make_settings(max_batch_files=2))) as small:
        files = [("files", (f"{i}.png", png(digits[0][i]), "image/png")) for i in range(3)]
        assert_error(small.post("/predict/batch", files=files), 400, "bad_request")


def test_batch_needs_files(client: TestClient):
    response = client.post("/predict/batch", files={"other": ("a.png", b"x", "image/png")})
    assert_error(response, 422, "invalid_request")
    assert_error(
        client.post("/predict/batch", content=b"x", headers={"content-type": "image/png"}),
        415,
        "unsupported_media_type",
    )


def test_not_an_image(client: TestClient):
    assert_error(
        client.post("/predict", files={"file": ("a.png", b"hello", "image/png")}),
        400,
        "invalid_image",
    )


def test_empty_body(client: TestClient):
    assert_error(
        client.post("/predict", content=b"", headers={"content-type": "image/png"}),
        400,
        "invalid_image",
    )


def test_empty_file_field(client: TestClient):
    assert_error(
        client.post("/predict", files={"file": ("a.png", b"", "image/png")}), 400, "invalid_image"
    )


def test_blank_image(client: TestClient):
    blank = png(np.full((40, 40), 255, np.uint8))
    assert_error(
        client.post("/predict", content=blank, headers={"content-type": "image/png"}),
        400,
        "blank_image",
    )


def test_missing_content_type(client: TestClient):
    response = client.post("/predict", content=b"abc", headers={"content-type": ""})
    assert_error(response, 415, "unsupported_media_type")


def test_unsupported_content_type(client: TestClient):
    response = client.post("/predict", json={"image": "abc"})
    assert_error(response, 415, "unsupported_media_type")


def test_multipart_without_the_file_field(client: TestClient):
    assert_error(
        client.post("/predict", files={"image": ("a.png", b"x", "image/png")}),
        422,
        "invalid_request",
    )
    assert_error(
        client.post("/predict", data={"file": "not a file"}, files={"other": ("a", b"x")}),
        422,
        "invalid_request",
    )


def test_upload_over_the_limit_by_content_length(client: TestClient):
    response = client.post(
        "/predict", content=b"\0" * 200_001, headers={"content-type": "image/png"}
    )
    assert_error(response, 413, "payload_too_large")


def test_upload_over_the_limit_while_streaming(client: TestClient):
    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"\0" * 10_000

    response = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


def test_multipart_over_the_limit(client: TestClient):
    response = client.post("/predict", files={"file": ("a.png", b"\0" * 300_000, "image/png")})
    assert_error(response, 413, "payload_too_large")


def test_too_many_pixels(client: TestClient):
    bomb = encode(Image.new("1", (10000, 10000)), "PNG")
    assert len(bomb) < 200_000
    assert_error(
        client.post("/predict", content=bomb, headers={"content-type": "image/png"}),
        413,
        "image_too_large",
    )


def test_unknown_route_and_method(client: TestClient):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_openapi_documents_every_endpoint(client: TestClient):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/predict", "/predict/batch", "/health/live", "/health/ready", "/model"):
        assert path in paths
    upload = paths["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(upload)
    prediction = schema["components"]["schemas"]["Prediction"]
    assert prediction["properties"]["label"]["examples"] == ["7"]
    assert client.get("/docs").status_code == 200


def test_not_ready_answers_503(client: TestClient, digits):
    services = client.app_state["services"]
    services.ready = False
    try:
        assert_error(client.get("/health/ready"), 503, "not_ready")
        response = client.post(
            "/predict", content=png(digits[0][0]), headers={"content-type": "image/png"}
        )
        assert_error(response, 503, "not_ready")
        assert client.get("/health/live").status_code == 200
    finally:
        services.ready = True


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_overload_is_a_fast_503_with_retry_after(anyio_backend, digits, make_settings):
    app = create_app(make_settings(max_queue_size=1, max_batch_size=1))
    data = png(digits[0][0])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(
                *(
                    client.post("/predict", content=data, headers={"content-type": "image/png"})
                    for _ in range(40)
                )
            )
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}
    refused = next(response for response in responses if response.status_code == 503)
    assert_error(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "1"


def test_missing_model_fails_startup(tmp_path: Path):
    app = create_app(Settings(model_base_dir=tmp_path))  # type: ignore[call-arg]
    with pytest.raises(ModelLoadError, match="no model versions"), TestClient(app):
        pass


def test_corrupt_model_fails_startup(tmp_path: Path):
    version_dir = tmp_path / "mnist" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "metadata.json").write_text('{"labels": ["a", "b"]}')
    (version_dir / "saved_model.pb").write_bytes(b"garbage")
    (version_dir / "variables").mkdir()
    (version_dir / "variables" / "variables.index").write_bytes(b"garbage")
    settings = Settings(model_base_dir=tmp_path, compile_cache_dir=tmp_path / "cache")  # type: ignore[call-arg]
    app = create_app(settings)
    with pytest.raises(ModelLoadError, match="not a loadable SavedModel"), TestClient(app):
        pass
