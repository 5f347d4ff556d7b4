"""Getting image bytes out of a request, within the configured limits.

`BodyLimits` refuses an oversized body from its Content-Length at once, or while it streams in
(chunked uploads), so an upload is never buffered past the limit; and a body that does not
arrive in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import error_response
from app.errors import (
    InvalidImageError,
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from app.multipart import parse_form

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
SUPPORTED_CONTENT_TYPES = "multipart/form-data, image/* or application/octet-stream"


class BodyLimits:
    """ASGI middleware: at most `limit_for(path)` bytes of request body, arriving within
    `timeout_s` in all and with no pause longer than `idle_timeout_s`.

    Without the deadlines, a client that declares a long body and sends part of it would hold
    its request open for as long as it keeps the connection."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], int],
        timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    response = error_response(
                        scope["path"],
                        413,
                        PayloadTooLargeError.code,
                        _too_large(limit),
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received
            wait_s = min(self.idle_timeout_s, deadline - loop.time())
            try:
                async with asyncio.timeout(wait_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"The request body did not arrive in time: at most {self.timeout_s:g} s in "
                    f"all and {self.idle_timeout_s:g} s between chunks."
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(_too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit:,} bytes."


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_image(request: Request) -> tuple[bytes, str | None]:
    """One image: multipart field `file`, or the raw body as image/* or octet-stream."""
    content_type = media_type(request)
    if content_type == "multipart/form-data":
        parts = parse_form(await request.body(), request.headers["content-type"], max_parts=8)
        files = [part for part in parts if part.name == "file" and part.filename is not None]
        if not files:
            raise InvalidRequestError(
                "The multipart form needs the image in a file field named 'file'."
            )
        upload = files[0]
        data, filename = upload.data, upload.filename
    elif content_type.startswith(RAW_IMAGE_TYPES):
        data, filename = await request.body(), None
    else:
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type or '(none)'} is not supported: send "
            f"{SUPPORTED_CONTENT_TYPES}."
        )
    if not data:
        raise InvalidImageError("The upload is empty.")
    return data, filename


async def read_images(request: Request, max_files: int) -> list[tuple[bytes, str | None]]:
    """Several images: multipart with repeated `files` fields, at most `max_files`."""
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            "Send the images as multipart/form-data, one 'files' field per image."
        )
    parts = parse_form(
        await request.body(), request.headers["content-type"], max_parts=max_files + 8
    )
    uploads: list[tuple[bytes, str | None]] = [
        (part.data, part.filename)
        for part in parts
        if part.name == "files" and part.filename is not None
    ]
    if not uploads:
        raise InvalidRequestError("The multipart form needs one or more file fields named 'files'.")
    if len(uploads) > max_files:
        raise MalformedRequestError(f"Too many files: the limit is {max_files}.")
    return uploads
