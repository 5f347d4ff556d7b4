"""The two upload kinds the benchmark sends: a 28x28 PNG and an 800x600 JPEG photo of a digit."""

from __future__ import annotations

import base64
import io
import json
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mnist_test_sample.npz"


@dataclass(frozen=True)
class Payload:
    name: str
    image: bytes
    content_type: str
    label: str
    # The request kinds (see REQUEST_KINDS) sent to cnn-serve; the references take multipart.
    kinds: tuple[str, ...] = ("multipart", "raw", "tf-serving b64", "v2 binary")


# A digit in MNIST's own format (light on black, ink box 20 px, centred by mass) skips most of
# preprocessing, as all but 3 of the official test digits do. A 28x28 digit drawn dark on white
# (this one, test digit 144, a 7) takes the whole way.
OFF_FORMAT_DIGIT = 3


def load_payloads() -> list[Payload]:
    with np.load(FIXTURE) as sample:
        digit, label = sample["images"][0], str(int(sample["labels"][0]))
        other, other_label = sample["images"][OFF_FORMAT_DIGIT], sample["labels"][OFF_FORMAT_DIGIT]
    return [
        Payload("28x28 PNG", png(digit), "image/png", label),
        Payload(
            "28x28 off-format",
            png(255 - other),
            "image/png",
            str(int(other_label)),
            kinds=("multipart",),
        ),
        Payload("800x600 JPEG", _jpeg_photo(digit), "image/jpeg", label),
    ]


def png(digit: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_photo(digit: np.ndarray) -> bytes:
    """Dark ink on unevenly lit paper, 800x600, as a phone might send it."""
    rng = np.random.default_rng(0)
    ink = np.asarray(Image.fromarray(digit).resize((420, 420), Image.Resampling.BICUBIC))
    y, x = np.mgrid[0:600, 0:800] / 600
    paper = 210 + 30 * x - 20 * y + rng.normal(0, 4, (600, 800))
    paper[90:510, 190:610] -= ink / 255 * 160
    rgb = np.repeat(np.clip(paper, 0, 255).astype(np.uint8)[..., np.newaxis], 3, axis=2)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@dataclass(frozen=True)
class Request:
    """One way of sending a payload: where, with which headers, and how to check the answer
    (`expect`: a substring of the right answer; or `argmax`: the index of the highest of the
    first list of numbers in it)."""

    path: str
    body: bytes
    headers: dict[str, str]
    expect: str = ""
    argmax: int = -1


REQUEST_KINDS = {
    "multipart": "POST /predict, multipart/form-data",
    "raw": "POST /predict, the image as the body",
    "tf-serving b64": 'POST /v1/models/mnist:predict, {"instances": [{"b64": ...}]}',
    "v2 binary": "POST /v2/models/mnist/infer, BYTES input in binary, top class as JSON",
}


def requests(payload: Payload) -> dict[str, Request]:
    """Each kind of request in REQUEST_KINDS for the payload."""
    form, form_type = multipart(payload)
    expect = f'"label":"{payload.label}"'
    instances = {"instances": [{"b64": base64.b64encode(payload.image).decode()}]}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 + len(payload.image)},
                }
            ],
            "outputs": [{"name": "output_0", "parameters": {"classification": 1}}],
        }
    ).encode()
    tensor = struct.pack("<I", len(payload.image)) + payload.image
    return {
        "multipart": Request("/predict", form, {"Content-Type": form_type}, expect),
        "raw": Request("/predict", payload.image, {"Content-Type": payload.content_type}, expect),
        "tf-serving b64": Request(
            "/v1/models/mnist:predict",
            json.dumps(instances).encode(),
            {"Content-Type": "application/json"},
            argmax=int(payload.label),
        ),
        "v2 binary": Request(
            "/v2/models/mnist/infer",
            header + tensor,
            {"Inference-Header-Content-Length": str(len(header))},
            expect=f':{payload.label}:{payload.label}"',
        ),
    }


def multipart(payload: Payload) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload with the image in field `file`."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload"\r\n'
            f"Content-Type: {payload.content_type}\r\n\r\n"
        ).encode()
        + payload.image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"
