"""multipart/form-data bodies parsed in memory with python-multipart's streaming parser.

Starlette's `request.form()` spools every file into a SpooledTemporaryFile behind an UploadFile;
the body here is already in memory (and capped by `BodyLimits`), so parsing it in place is
several times cheaper (the README's benchmark section has the figures).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import MalformedRequestError


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    data: bytes


@dataclass(slots=True)
class _PartBuilder:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    chunks: list[bytes] = field(default_factory=list)


# A part's header line may be long (a file name of thousands of characters is still just a
# name); the body as a whole is capped by `BodyLimits`.
MAX_HEADER_SIZE = 64 * 1024
# File names are echoed back (the batch endpoint); longer ones are cut.
MAX_FILENAME_LENGTH = 255
_HEADER_START = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:")


def parse_form(body: bytes, content_type: str, *, max_parts: int) -> list[Part]:
    """Every part of the body, in order; at most `max_parts` of them."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequestError("The multipart Content-Type has no boundary.")
    try:
        return _parse(body, boundary, max_parts)
    except MultipartParseError:
        # Some clients put a raw line break in a file name (browsers and httpx escape it as
        # %0D%0A), which breaks its header in two. The name is metadata: join the pieces.
        try:
            return _parse(_unfold_part_headers(body, boundary), boundary, max_parts)
        except MultipartParseError as error:
            raise MalformedRequestError(f"The multipart body is malformed: {error}") from None


def _parse(body: bytes, boundary: bytes, max_parts: int) -> list[Part]:
    parts: list[Part] = []
    current = _PartBuilder()

    def on_part_begin() -> None:
        nonlocal current
        if len(parts) >= max_parts:
            raise MalformedRequestError(f"Too many parts in the form: the limit is {max_parts}.")
        current = _PartBuilder()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current.header_value += data[start:end]

    def on_header_end() -> None:
        current.headers.append((bytes(current.header_field).lower(), bytes(current.header_value)))
        current.header_field.clear()
        current.header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.chunks.append(data[start:end])

    def on_part_end() -> None:
        parts.append(_finish(current))

    parser = MultipartParser(
        boundary,
        max_header_size=MAX_HEADER_SIZE,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


def _unfold_part_headers(body: bytes, boundary: bytes) -> bytes:
    """The body with every part header line that does not start a header joined to the line
    before it."""
    delimiter = b"--" + boundary
    pieces = body.split(delimiter)
    for number, piece in enumerate(pieces[1:], start=1):
        end = piece.find(b"\r\n\r\n")
        if end == -1:
            continue
        lines = piece[:end].split(b"\r\n")
        unfolded = lines[:2]
        for line in lines[2:]:
            if _HEADER_START.match(line):
                unfolded.append(line)
            else:
                unfolded[-1] += b" " + line
        pieces[number] = b"\r\n".join(unfolded) + piece[end:]
    return delimiter.join(pieces)


def _finish(builder: _PartBuilder) -> Part:
    dispositions = [value for name, value in builder.headers if name == b"content-disposition"]
    _, options = parse_options_header(dispositions[0] if dispositions else None)
    if b"name" not in options:
        raise MalformedRequestError("A multipart part has no Content-Disposition name.")
    filename = options.get(b"filename")
    return Part(
        name=options[b"name"].decode("utf-8", "replace"),
        filename=None if filename is None else _printable(filename.decode("utf-8", "replace")),
        data=b"".join(builder.chunks),
    )


def _printable(filename: str) -> str:
    """Without control characters (never reflected), and at most MAX_FILENAME_LENGTH long."""
    cleaned = "".join(
        " " if unicodedata.category(character) == "Cc" else character for character in filename
    )
    return (
        cleaned if len(cleaned) <= MAX_FILENAME_LENGTH else cleaned[: MAX_FILENAME_LENGTH - 1] + "…"
    )
