"""Tensors as inference protocols carry them: model inputs given as numbers, encoded images given
as base64 text or length-prefixed bytes, probabilities sent back as numbers or raw float32.

Shared by the TensorFlow Serving and KServe v2 routers; nothing here knows HTTP.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.errors import InvalidArgumentError
from app.model_format import INPUT_SHAPE, INPUT_SIDE

# An instance of the model input may be given as 28x28, 28x28x1 or 784 numbers.
INSTANCE_SHAPES = ((INPUT_SIDE, INPUT_SIDE), INPUT_SHAPE, (INPUT_SIDE * INPUT_SIDE,))
_LENGTH_PREFIX = struct.Struct("<I")


def model_inputs(values: Any, *, what: str) -> np.ndarray:
    """(N, 28, 28) float32 from N instances of the model input, as nested lists or an array."""
    try:
        array = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidArgumentError(
            f"{what} must be numbers of one shape (28x28, 28x28x1 or 784 per instance)."
        ) from None
    if array.ndim < 2 or tuple(array.shape[1:]) not in INSTANCE_SHAPES:
        raise InvalidArgumentError(
            f"{what} has shape {list(array.shape)}; each instance must be 28x28, 28x28x1 or "
            "784 numbers (pixels in 0-255, light ink on black)."
        )
    if len(array) == 0:
        raise InvalidArgumentError(f"{what} holds no instances.")
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"{what} holds a value that is not a finite number.")
    return array.reshape(len(array), INPUT_SIDE, INPUT_SIDE)


def from_base64(text: Any, *, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"{what} must be a base64 string.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(f"{what} is not valid base64.") from None


def split_bytes_elements(buffer: bytes, count: int, *, what: str) -> list[bytes]:
    """The elements of a BYTES tensor in binary form: each a 4-byte little-endian length, then
    that many bytes."""
    elements, offset = [], 0
    while offset < len(buffer):
        if offset + _LENGTH_PREFIX.size > len(buffer):
            raise InvalidArgumentError(f"{what}: a BYTES element's length is cut short.")
        (length,) = _LENGTH_PREFIX.unpack_from(buffer, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(buffer):
            raise InvalidArgumentError(f"{what}: a BYTES element is shorter than its length.")
        elements.append(buffer[offset : offset + length])
        offset += length
    if len(elements) != count:
        raise InvalidArgumentError(
            f"{what} holds {len(elements)} elements; its shape says {count}."
        )
    return elements


def join_bytes_elements(elements: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH_PREFIX.pack(len(element)) + element for element in elements)


def top_classes(
    probabilities: np.ndarray, labels: Sequence[str], count: int
) -> list[list[tuple[float, int, str]]]:
    """Per row, the `count` most probable classes as (probability, index, label), best first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
    return [
        [(float(row[index]), int(index), labels[index]) for index in indices]
        for row, indices in zip(probabilities, order, strict=True)
    ]
