"""Image bytes in, grayscale arrays out: the whole image at a small working size, and any part
of it again at a finer scale when the part turns out to be small.

Nothing is decoded until the header has been checked against the pixel limit. Large JPEGs are
decoded straight at 1/2, 1/4 or 1/8 of their size (DCT scaling), and only their luma channel.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageTooLargeError, InvalidImageError

DEFAULT_MAX_PIXELS = 50_000_000
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "DIB", "WEBP", "TIFF")
# The whole image is first looked at with at most this many pixels on its longer side: plenty to
# find a digit and to centre a large one, and a 12-megapixel photo costs about as much as a
# thumbnail. A small digit is then looked at again, alone, at a finer scale (`Decoded.region`).
WORKING_MAX_SIDE = 96

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Where an orientation can be recorded besides TIFF tags; reading it costs more than decoding a
# small PNG, so images that carry none of these skip it.
_ORIENTATION_METADATA = frozenset({"exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif"})

# (left, top, right, bottom) in pixels of the upright image (after its EXIF orientation).
ImageBox = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class OpenedImage:
    """An upload whose header has been read and checked; its pixels are not decoded yet."""

    image: Image.Image
    data: bytes

    @property
    def pixel_count(self) -> int:
        return self.image.width * self.image.height


@dataclass(frozen=True, slots=True)
class Grayscale:
    """Float32 gray levels in [0, 255] of the upright image, or of a part of it.

    Pixel (row, column) shows image point (left + column / scale, top + row / scale).
    """

    pixels: np.ndarray
    left: float
    top: float
    scale: float

    def image_box(self, rows: slice, columns: slice) -> ImageBox:
        return (
            self.left + columns.start / self.scale,
            self.top + rows.start / self.scale,
            self.left + columns.stop / self.scale,
            self.top + rows.stop / self.scale,
        )


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> OpenedImage:
    """Read only the header, refusing unknown formats and decompression bombs before decoding."""
    if not data:
        raise InvalidImageError("The upload is empty.")
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}."
        )
    return OpenedImage(image, data)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"The image has too many pixels: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidImageError(
            f"Not a decodable image. Supported formats: {', '.join(SUPPORTED_FORMATS[:-1])} and "
            f"{SUPPORTED_FORMATS[-1]}."
        ) from None


class Decoded:
    """An upload decoded to grayscale: `working` is the whole image, small."""

    def __init__(self, opened: OpenedImage) -> None:
        self._opened = opened
        stored_size = opened.image.size
        # The source: the decoded pixels in a working mode (L, LA or F), as large as decoded.
        self._source, quarter_turned = _decode(
            opened.image, scale=WORKING_MAX_SIDE / max(stored_size)
        )
        self.upright_size = stored_size[::-1] if quarter_turned else stored_size
        working = self._source
        if max(working.size) > WORKING_MAX_SIDE:
            working = working.copy()
            working.thumbnail((WORKING_MAX_SIDE, WORKING_MAX_SIDE), Image.Resampling.BOX)
        values = np.asarray(working, dtype=np.float32)
        # Decided once from the whole image, so every part of it is read the same way.
        self._transparent_background = (
            _contrasting_background(values) if working.mode == "LA" else None
        )
        self._float_range = _value_range(values) if working.mode == "F" else None
        self.working = Grayscale(self._gray_levels(values), 0.0, 0.0, self._scale_of(working))

    def region(self, box: ImageBox, scale: float) -> Grayscale | None:
        """The part of the image inside `box`, at `scale` pixels per image pixel (at most 1:1).

        None when that would show no more detail than `working` already does."""
        scale = min(scale, 1.0)
        if scale < 1.5 * self.working.scale:
            return None
        source = self._source
        if self._scale_of(source) < scale and self._opened.image.format in _JPEG_FORMATS:
            source, _ = _decode(_open(self._opened.data), scale=scale)
        source_scale = self._scale_of(source)
        width, height = self.upright_size
        left, top = max(box[0], 0.0), max(box[1], 0.0)
        right, bottom = min(box[2], float(width)), min(box[3], float(height))
        if right - left < 1 or bottom - top < 1:
            return None
        # Clamped to the source too: its size is rounded (JPEG DCT scaling), and a crop past the
        # edge would add black pixels.
        crop_box = (
            int(left * source_scale),
            int(top * source_scale),
            min(int(np.ceil(right * source_scale)), source.width),
            min(int(np.ceil(bottom * source_scale)), source.height),
        )
        crop = source.crop(crop_box)
        left, top = crop_box[0] / source_scale, crop_box[1] / source_scale
        reduction = min(scale / source_scale, 1.0)
        if reduction < 1.0:
            size = (max(1, round(crop.width * reduction)), max(1, round(crop.height * reduction)))
            crop = crop.resize(size, Image.Resampling.BOX)
        values = np.asarray(crop, dtype=np.float32)
        return Grayscale(self._gray_levels(values), left, top, source_scale * reduction)

    def _scale_of(self, image: Image.Image) -> float:
        return image.width / self.upright_size[0]

    def _gray_levels(self, values: np.ndarray) -> np.ndarray:
        if self._transparent_background is not None:
            return _composite(values[..., 0], values[..., 1] / 255, self._transparent_background)
        if self._float_range is not None:
            low, high = self._float_range
            # In this order, the ends of the range land on 0 and 255 exactly.
            stretched = (np.nan_to_num(values) - low) * 255 / (high - low)
            return np.asarray(np.clip(stretched, 0, 255), dtype=np.float32)
        return values


def _decode(image: Image.Image, *, scale: float) -> tuple[Image.Image, bool]:
    """(The pixels, upright, in L, LA (transparency kept for compositing) or F (16/32-bit) mode;
    whether its orientation turned it a quarter turn).

    A JPEG is decoded at the smallest DCT scale that still gives `scale` of its size."""
    if image.format in _JPEG_FORMATS and scale < 1:
        image.draft("L", (round(image.width * scale), round(image.height * scale)))
    try:
        image.load()
        stored_size = image.size
        if image.format == "TIFF" or not _ORIENTATION_METADATA.isdisjoint(image.info):
            ImageOps.exif_transpose(image, in_place=True)
        quarter_turned = image.size != stored_size
        return _to_working_mode(image), quarter_turned
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"The image has too many pixels: {error}") from None
    except Exception as error:  # Pillow raises many types for corrupt data; all mean the same.
        raise InvalidImageError(f"The image could not be decoded: {error}") from None


def _to_working_mode(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return _eight_bit_or_float(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        if image.mode not in ("RGBA", "LA"):
            image = image.convert("RGBA")
        return image.convert("LA")
    if image.mode == "L":
        return image
    if image.mode not in ("RGB", "1", "P", "CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB")
    return image.convert("L")


def _eight_bit_or_float(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float image as the 8-bit gray image it reads as, where its white level
    is known (so the same pixels give the same answer in any mode), else as floats to stretch."""
    values = np.nan_to_num(
        np.asarray(image.convert("F"), dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0
    )
    white = _white_level(values, integer=image.mode != "F")
    if white is None:
        return Image.fromarray(values, mode="F")
    return Image.fromarray(np.clip(np.rint(values * (255 / white)), 0, 255).astype(np.uint8))


def _contrasting_background(luma_alpha: np.ndarray) -> float:
    """Black or white: whichever contrasts with the visible content.

    A canvas drawing is dark strokes on a transparent (black, alpha 0) background: compositing
    onto black would erase it, onto white keeps it.
    """
    luma, alpha = luma_alpha[..., 0], luma_alpha[..., 1]
    opacity = float(alpha.sum())
    if opacity == 0:
        return 0.0
    return 255.0 if float((luma * alpha).sum()) / opacity < 128 else 0.0


def _composite(luma: np.ndarray, alpha: np.ndarray, background: float) -> np.ndarray:
    return np.asarray(luma * alpha + background * (1 - alpha), dtype=np.float32)


def _white_level(values: np.ndarray, *, integer: bool) -> float | None:
    """Where white is in a 16-bit, 32-bit or float image, when its values say so.

    Integers are read against the range their data fills in its container: 8-bit data widened
    to 16 bits (x257 or x256) or 12-bit data in a 16-bit file has its white at 2^bits - 1.
    Floats in [0, 1] are intensities. Anything else (negative values, other scales): None."""
    lowest, highest = float(values.min()), float(values.max())
    if lowest < 0:
        return None
    if integer:
        return float(2 ** max(8, int(np.ceil(np.log2(highest + 1)))) - 1)
    return 1.0 if highest <= 1 else None


def _value_range(values: np.ndarray) -> tuple[float, float]:
    """An image with no known white level is stretched to its own range, less a few extreme
    pixels (a sensor's dead and stuck pixels)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(value) for value in np.quantile(values, [0.001, 0.999]))
    return (low, high) if high - low >= 1e-6 else (low, low + 1.0)
