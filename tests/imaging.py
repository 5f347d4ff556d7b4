"""Helpers that make test images: encodings, photos of digits, canvas drawings."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image


def encode(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png(digit: np.ndarray) -> bytes:
    return encode(Image.fromarray(digit))


def paper_photo(digit: np.ndarray, side: int = 280, seed: int = 0) -> Image.Image:
    """The digit as dark ink on unevenly lit, textured paper, the way a phone photographs it."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    y, x = np.mgrid[0:side, 0:side] / side
    paper = 215 + 35 * x - 25 * y + rng.normal(0, 5, (side, side))
    photo = paper - (ink.astype(np.float64) / 255) * 170
    return Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))


def canvas_drawing(digit: np.ndarray, side: int = 280) -> Image.Image:
    """Black strokes on a fully transparent background, as an HTML canvas exports them."""
    alpha = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    rgba = np.zeros((side, side, 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    return Image.fromarray(rgba)


def similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Correlation of two 28x28 images, forgiving a one-pixel shift (centring rounds)."""
    return max(
        float(np.corrcoef(np.roll(first, (dy, dx), axis=(0, 1)).ravel(), second.ravel())[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def printed(text: str, font_file: str, size: tuple[int, int] = (240, 200)) -> bytes:
    """Dark print on white paper (a scan of a sheet with `text` on it), as PNG. `font_file` is
    one of the fonts inside matplotlib's wheel, so every machine has it."""
    from PIL import ImageDraw, ImageFont

    from model.non_digits import matplotlib_fonts

    image = Image.new("L", size, 245)
    face = ImageFont.truetype(str(matplotlib_fonts() / font_file), size[1] * 3 // 5)
    centre = (size[0] // 2, size[1] // 2)
    ImageDraw.Draw(image).text(centre, text, fill=20, font=face, anchor="mm")
    return encode(image)


def written_number(digits: Sequence[np.ndarray], gap: int = 2) -> bytes:
    """MNIST digits written side by side, as a number is: each cropped to its ink, `gap` px
    apart, as one PNG."""
    crops = []
    for digit in digits:
        columns = np.flatnonzero(digit.max(axis=0) > 0)
        crops.append(digit[:, columns[0] : columns[-1] + 1])
    spacer = np.zeros((digits[0].shape[0], gap), dtype=np.uint8)
    parts = [part for crop in crops for part in (crop, spacer)][:-1]
    return png(np.pad(np.concatenate(parts, axis=1), ((0, 0), (4, 4))))
