"""A corpus of hostile requests, generated here: every one gets a clear 4xx in the usual error
shape, never a 5xx or a traceback, and the server goes on answering real requests."""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.imaging import png

pytestmark = pytest.mark.slow

Hostile = tuple[str, str, dict[str, str], bytes]


def png_bomb() -> bytes:
    """A valid PNG header claiming 60000x60000 pixels, with a few bytes of compressed zeros."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    header = bytearray(buffer.getvalue()[:33])
    header[16:24] = (60000).to_bytes(4, "big") * 2
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    return bytes(header) + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def corpus(digit: np.ndarray) -> Iterator[tuple[str, Hostile]]:
    image = png(digit)
    raw = {"content-type": "image/png"}
    as_json = {"content-type": "application/json"}
    yield "truncated png", ("POST", "/predict", raw, image[: len(image) // 2])
    yield "png bomb", ("POST", "/predict", raw, png_bomb())
    yield "gif header only", ("POST", "/predict", raw, b"GIF89a\x10\x00\x10\x00")
    yield "svg", ("POST", "/predict", {"content-type": "image/svg+xml"}, b"<svg onload=x()/>")
    yield "html as image", ("POST", "/predict", raw, b"<html><script>alert(1)</script>")
    yield "zero bytes", ("POST", "/predict", raw, b"")
    yield "random bytes", ("POST", "/predict", raw, np.random.default_rng(0).bytes(5000))
    form = "multipart/form-data; boundary=b"
    yield "multipart no end", ("POST", "/predict", {"content-type": form}, b"--b\r\nContent-")
    yield (
        "multipart no boundary",
        ("POST", "/predict", {"content-type": "multipart/form-data"}, image),
    )
    yield (
        "multipart many parts",
        (
            "POST",
            "/predict",
            {"content-type": form},
            b"".join(
                b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n' for _ in range(100)
            )
            + b"--b--\r\n",
        ),
    )
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    yield "v1 deeply nested json", ("POST", "/v1/models/mnist:predict", as_json, deep)
    yield "v2 deeply nested json", ("POST", "/v2/models/mnist/infer", as_json, deep)
    yield "v1 not json", ("POST", "/v1/models/mnist:predict", as_json, b"\xff\xfe{")
    yield "v1 json array", ("POST", "/v1/models/mnist:predict", as_json, b"[1, 2, 3]")
    nan = json.dumps({"instances": [[[float("nan")] * 28] * 28]}).encode()
    yield "v1 nan pixels", ("POST", "/v1/models/mnist:predict", as_json, nan)
    strings = json.dumps({"instances": [[["x"] * 28] * 28]}).encode()
    yield "v1 string pixels", ("POST", "/v1/models/mnist:predict", as_json, strings)
    many = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}] * 500}).encode()
    yield "v1 too many instances", ("POST", "/v1/models/mnist:predict", as_json, many)
    huge = {"inputs": [{"name": "image", "shape": [1, 10**12], "datatype": "FP32", "data": [1]}]}
    yield "v2 huge shape", ("POST", "/v2/models/mnist/infer", as_json, json.dumps(huge).encode())
    negative = {"inputs": [{"name": "image", "shape": [-1, 784], "datatype": "FP32", "data": []}]}
    yield (
        "v2 negative shape",
        ("POST", "/v2/models/mnist/infer", as_json, json.dumps(negative).encode()),
    )
    lying = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 784],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 10**9},
                }
            ]
        }
    ).encode()
    header = {"inference-header-content-length": str(len(lying))}
    yield "v2 binary size lies", ("POST", "/v2/models/mnist/infer", header, lying + b"\x00" * 16)
    header = {"inference-header-content-length": "99999999"}
    yield "v2 header length lies", ("POST", "/v2/models/mnist/infer", header, b"{}")
    bytes_tensor = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    header = {"inference-header-content-length": str(len(bytes_tensor))}
    yield (
        "v2 bytes length prefix lies",
        (
            "POST",
            "/v2/models/mnist/infer",
            header,
            bytes_tensor + (10**6).to_bytes(4, "little") + b"abcd",
        ),
    )
    yield (
        "v2 parameters not an object",
        (
            "POST",
            "/v2/models/mnist/infer",
            as_json,
            json.dumps({"parameters": 5, "inputs": []}).encode(),
        ),
    )
    yield "explain not boolean", ("POST", "/predict?explain=%00", raw, image)
    yield "path traversal", ("GET", "/static/../../../etc/passwd", {}, b"")
    yield "unknown version text", ("GET", "/v2/models/mnist/versions/one", {}, b"")


def test_every_hostile_request_gets_a_clean_4xx(hostile_url, digits):
    images, labels = digits
    with httpx.Client(base_url=hostile_url, timeout=30) as client:
        for name, (method, path, headers, body) in corpus(images[0]):
            response = client.request(method, path, headers=headers, content=body)
            assert 400 <= response.status_code < 500, (
                name,
                response.status_code,
                response.text[:300],
            )
            assert "Traceback" not in response.text, name
            if response.headers.get("content-type") == "application/json":
                error = response.json()["error"]
                assert error if isinstance(error, str) else error["message"], name
        # And the server is still itself.
        response = client.post(
            "/predict", content=png(images[1]), headers={"content-type": "image/png"}
        )
        assert response.json()["label"] == str(labels[1])
