"""The two upload kinds the benchmark sends: a 28x28 PNG and an 800x600 JPEG photo of a digit."""

from __future__ import annotations

import io
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


def load_payloads() -> list[Payload]:
    with np.load(FIXTURE) as sample:
        digit, label = sample["images"][0], str(int(sample["labels"][0]))
    return [
        Payload("28x28 PNG", _png(digit), "image/png", label),
        Payload("800x600 JPEG", _jpeg_photo(digit), "image/jpeg", label),
    ]


def _png(digit: np.ndarray) -> bytes:
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
