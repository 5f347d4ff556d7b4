"""The in-memory multipart parser, against bodies encoded by httpx (a real client's encoder)."""

from __future__ import annotations

import httpx
import pytest

from app.errors import MalformedRequestError
from app.multipart import parse_form


def encode(**kwargs: object) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/", **kwargs)  # type: ignore[arg-type]
    return request.read(), request.headers["content-type"]


def test_files_and_fields_in_order():
    png = bytes(range(256)) * 10 + b"\r\n--not-the-boundary\r\n"
    body, content_type = encode(
        data={"note": "hello"},
        files=[("file", ("seven.png", png, "image/png")), ("file", ("ñ.png", b"x", "image/png"))],
    )
    parts = parse_form(body, content_type, max_parts=8)
    assert [(part.name, part.filename, part.data) for part in parts] == [
        ("note", None, b"hello"),
        ("file", "seven.png", png),
        ("file", "ñ.png", b"x"),
    ]


def test_an_empty_file_is_kept():
    body, content_type = encode(files={"file": ("empty.png", b"", "image/png")})
    assert parse_form(body, content_type, max_parts=1)[0].data == b""


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"--b\r\nbroken", "multipart/form-data", "no boundary"),
        (
            b"--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            "Content-Disposition",
        ),
        (b"garbage without any boundary", "multipart/form-data; boundary=b", "malformed"),
    ],
)
def test_malformed_bodies_are_400s(body: bytes, content_type: str, message: str):
    with pytest.raises(MalformedRequestError, match=message) as raised:
        parse_form(body, content_type, max_parts=8)
    assert raised.value.status_code == 400


def test_the_part_count_is_bounded():
    body, content_type = encode(
        files=[("files", (f"{i}.png", b"x", "image/png")) for i in range(3)]
    )
    assert len(parse_form(body, content_type, max_parts=3)) == 3
    with pytest.raises(MalformedRequestError, match="limit is 2"):
        parse_form(body, content_type, max_parts=2)
