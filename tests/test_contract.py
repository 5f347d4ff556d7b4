"""Real response bodies, checked against the OpenAPI schema the app publishes.

Every request below goes through the real app (lifespan entered, committed model); its status
must be documented for its path and method, and its JSON body must validate against the
documented schema. Response models forbid unknown fields, so a body that grows or loses a field
fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from app.config import Settings
from app.main import create_app
from tests.conftest import COMMITTED_MODEL_BASE
from tests.imaging import png

pytestmark = pytest.mark.slow

Call = Callable[[TestClient, bytes], httpx.Response]


@pytest.fixture(scope="module")
def client(compile_cache_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_base_dir=COMMITTED_MODEL_BASE,
        compile_cache_dir=compile_cache_dir,
        max_upload_bytes=100_000,
        max_batch_upload_bytes=200_000,
        max_batch_files=3,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


@pytest.fixture(scope="module")
def digit_png(digits: tuple[np.ndarray, np.ndarray]) -> bytes:
    return png(digits[0][0])


def assert_documented(openapi: dict[str, Any], response: httpx.Response) -> None:
    method, path = response.request.method.lower(), response.request.url.path
    responses = openapi["paths"][path][method]["responses"]
    documented = responses.get(str(response.status_code))
    assert documented, f"{method} {path} answered {response.status_code}, not documented"
    schema = documented["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": openapi["components"]})
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert not errors, f"{method} {path} {response.status_code}: {errors}"


def raw(data: bytes) -> dict[str, Any]:
    return {"content": data, "headers": {"content-type": "image/png"}}


CASES: dict[str, tuple[int, Call]] = {
    "predict multipart": (
        200,
        lambda client, image: client.post("/predict", files={"file": ("a.png", image)}),
    ),
    "predict raw body": (200, lambda client, image: client.post("/predict", **raw(image))),
    "predict explained": (
        200,
        lambda client, image: client.post("/predict", params={"explain": "true"}, **raw(image)),
    ),
    "batch explained": (
        200,
        lambda client, image: client.post(
            "/predict/batch?explain=true", files=[("files", ("a.png", image))]
        ),
    ),
    "explain not a boolean": (
        422,
        lambda client, image: client.post("/predict", params={"explain": "2"}, **raw(image)),
    ),
    "batch with a failing file": (
        200,
        lambda client, image: client.post(
            "/predict/batch", files=[("files", ("a.png", image)), ("files", ("b.png", b"junk"))]
        ),
    ),
    "not an image": (400, lambda client, _: client.post("/predict", **raw(b"junk"))),
    "blank image": (
        400,
        lambda client, _: client.post("/predict", **raw(png(np.zeros((28, 28), np.uint8)))),
    ),
    "too many batch files": (
        400,
        lambda client, image: client.post(
            "/predict/batch", files=[("files", (f"{i}.png", image)) for i in range(4)]
        ),
    ),
    "body too large": (413, lambda client, _: client.post("/predict", **raw(b"\0" * 100_001))),
    "batch body too large": (
        413,
        lambda client, _: client.post("/predict/batch", files={"files": ("a", b"\0" * 200_001)}),
    ),
    "wrong content type": (415, lambda client, _: client.post("/predict", json={"image": 1})),
    "missing file field": (
        422,
        lambda client, image: client.post("/predict", files={"image": ("a.png", image)}),
    ),
    "liveness": (200, lambda client, _: client.get("/health/live")),
    "readiness": (200, lambda client, _: client.get("/health/ready")),
    "model metadata": (200, lambda client, _: client.get("/model")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_response_matches_the_openapi_schema(client, openapi, digit_png, case):
    status, call = CASES[case]
    response = call(client, digit_png)
    assert response.status_code == status, response.text
    assert_documented(openapi, response)


def test_not_ready_responses_match_the_schema(client, openapi, digit_png):
    services = client.app_state["services"]
    services.ready = False
    try:
        for response in (
            client.get("/health/ready"),
            client.get("/model"),
            client.post("/predict", **raw(digit_png)),
            client.post("/predict/batch", files={"files": ("a.png", digit_png)}),
        ):
            assert response.status_code == 503
            assert_documented(openapi, response)
    finally:
        services.ready = True


def test_a_body_that_drifts_from_the_schema_is_caught(openapi, digit_png, client):
    response = client.post("/predict", **raw(digit_png))
    drifted = httpx.Response(200, json={**response.json(), "extra": 1}, request=response.request)
    with pytest.raises(AssertionError, match="extra"):
        assert_documented(openapi, drifted)
    incomplete = {key: value for key, value in response.json().items() if key != "confidence"}
    missing = httpx.Response(200, json=incomplete, request=response.request)
    with pytest.raises(AssertionError, match="confidence"):
        assert_documented(openapi, missing)
