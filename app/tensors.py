"""Tensors as inference protocols carry them: model inputs given as numbers, encoded images given
as base64 text or length-prefixed bytes, probabilities sent back as numbers or raw float32.

Shared by the TensorFlow Serving and KServe v2 routers; nothing here knows HTTP.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.errors import InvalidArgumentError, MalformedRequestError
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


def instance_count(shape: Any, limit: int, *, what: str) -> int:
    """N of a tensor shaped [N, ...], within the per-request limit."""
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) for d in shape):
        raise InvalidArgumentError(f"{what} needs a shape: a list of whole numbers.")
    count = int(shape[0])
    if not 1 <= count <= limit:
        raise MalformedRequestError(f"{what} has {count} instances; the limit is {limit}.")
    return count


def shaped_inputs(flat: np.ndarray, shape: list[int], *, what: str) -> np.ndarray:
    """(N, 28, 28) model inputs from a tensor's values in order and its shape."""
    if flat.size != math.prod(shape):
        raise InvalidArgumentError(
            f"{what} holds {flat.size} values; its shape {shape} needs {math.prod(shape)}."
        )
    return model_inputs(flat.reshape(shape), what=what)


def images_count_checked(images: Sequence[Any], shape: list[int], *, what: str) -> None:
    """A tensor of N encoded images is shaped [N] or [N, 1]."""
    if math.prod(shape) != shape[0]:
        raise InvalidArgumentError(f"{what}: a tensor of images is shaped [N] or [N, 1].")
    if len(images) != shape[0]:
        raise InvalidArgumentError(f"{what} holds {len(images)} elements; shape says {shape[0]}.")


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


def classification_strings(
    probabilities: np.ndarray, labels: Sequence[str], count: int
) -> list[str]:
    """Triton's classification output: per row, the `count` best as "score:index:label"."""
    return [
        f"{score:f}:{index}:{label}"
        for row in top_classes(probabilities, labels, count)
        for score, index, label in row
    ]


def top_classes(
    probabilities: np.ndarray, labels: Sequence[str], count: int
) -> list[list[tuple[float, int, str]]]:
    """Per row, the `count` most probable classes as (probability, index, label), best first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
    return [
        [(float(row[index]), int(index), labels[index]) for index in indices]
        for row, indices in zip(probabilities, order, strict=True)
    ]
