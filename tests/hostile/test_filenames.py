"""A file name is metadata: however long or odd, the image is classified, and the name is never
echoed with control characters in it."""

from __future__ import annotations

import httpx
import pytest

from app.multipart import MAX_FILENAME_LENGTH
from tests.imaging import png

pytestmark = pytest.mark.slow

NAMES = {
    "8000 characters": "a" * 8000 + ".png",
    "raw CR LF": "seven\r\nSet-Cookie: x=1.png",
    "raw LF": "seven\nX.png",
    "NUL and escapes": "se\x00ven\x1b[31m.png",
    "quotes and backslashes": 'se"v\\en.png',
    "unicode": "sept – 七.png",
}


def multipart(filename: str, field: str, data: bytes) -> tuple[bytes, str]:
    """Written by hand: clients such as httpx would escape what is being tested."""
    boundary = "cnnserveboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"'
        "\r\nContent-Type: image/png\r\n\r\n"
    )
    return (
        head.encode() + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


@pytest.mark.parametrize("name", list(NAMES), ids=list(NAMES))
def test_odd_file_names_do_not_stop_a_valid_image(hostile_url, digits, name):
    images, labels = digits
    body, content_type = multipart(NAMES[name], "file", png(images[0]))
    response = httpx.post(
        f"{hostile_url}/predict", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == str(labels[0])


@pytest.mark.parametrize("name", list(NAMES), ids=list(NAMES))
def test_echoed_file_names_are_printable_and_bounded(hostile_url, digits, name):
    body, content_type = multipart(NAMES[name], "files", png(digits[0][1]))
    response = httpx.post(
        f"{hostile_url}/predict/batch", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    echoed = response.json()["results"][0]["filename"]
    assert len(echoed) <= MAX_FILENAME_LENGTH
    assert not any(ord(character) < 32 or ord(character) == 127 for character in echoed)
    assert NAMES[name][:2] in echoed
