"""multipart/form-data bodies parsed in memory with the `multipart` package's push parser.

Starlette's `request.form()` spools every file into a SpooledTemporaryFile behind an UploadFile;
the body here is already in memory (and capped by `BodyLimits`), so parsing it in place is
several times cheaper. `multipart` (Bottle's parser) splits the body at the boundary with
`bytes.find` and parses a part's headers line by line; python-multipart's parser, used here
before, walked the header bytes one by one in Python: 25 us against 6 us for a one-file form (the
README's benchmark section has the figures).
"""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass

import multipart

from app.errors import MalformedRequestError


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    data: bytes


# A part's header line may be long (a file name of thousands of characters is still just a
# name); the body as a whole is capped by `BodyLimits`.
MAX_HEADER_SIZE = 64 * 1024
# File names are echoed back (the batch endpoint); longer ones are cut.
MAX_FILENAME_LENGTH = 255


def parse_form(body: bytes, content_type: str, *, max_parts: int) -> list[Part]:
    """Every part of the body, in order; at most `max_parts` of them."""
    _, params = multipart.parse_options_header(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedRequestError("The multipart Content-Type has no boundary.")
    try:
        return _parse(body, boundary, max_parts)
    except multipart.MultipartError as error:
        raise MalformedRequestError(f"The multipart body is malformed: {error}") from None


def _parse(body: bytes, boundary: str, max_parts: int) -> list[Part]:
    parser = multipart.PushMultipartParser(boundary, max_header_size=MAX_HEADER_SIZE)
    parts: list[Part] = []
    segment: multipart.MultipartSegment | None = None
    chunks: list[bytes] = []
    # The events of the whole body, then of its end (each parse consumed before the next).
    for event in itertools.chain(parser.parse(body), parser.parse(b"")):
        if isinstance(event, multipart.MultipartSegment):
            if len(parts) >= max_parts:
                raise MalformedRequestError(
                    f"Too many parts in the form: the limit is {max_parts}."
                )
            segment, chunks = event, []
        elif event is None:
            assert segment is not None
            parts.append(_finish(segment, chunks))
        else:
            chunks.append(event)
    if not parser.closed:
        raise multipart.ParserError("The multipart body ends before its closing boundary.")
    return parts


def _finish(segment: multipart.MultipartSegment, chunks: list[bytes]) -> Part:
    if segment.name is None:
        raise MalformedRequestError("A multipart part has no Content-Disposition name.")
    filename = segment.filename
    if filename is None:
        # Some clients put a raw line break in a file name (browsers and httpx escape it as
        # %0D%0A): its quote is left unclosed and the rest of the name reads as a header of
        # its own. The name is metadata: keep what there is of it.
        _, found, rest = segment.header("Content-Disposition", "").partition("filename=")
        filename = rest.strip().strip('"') if found else None
    return Part(
        name=segment.name,
        filename=None if filename is None else _printable(filename),
        data=b"".join(chunks),
    )


def _printable(filename: str) -> str:
    """Without control characters (never reflected), and at most MAX_FILENAME_LENGTH long."""
    cleaned = "".join(
        " " if unicodedata.category(character) == "Cc" else character for character in filename
    )
    return (
        cleaned if len(cleaned) <= MAX_FILENAME_LENGTH else cleaned[: MAX_FILENAME_LENGTH - 1] + "…"
    )
