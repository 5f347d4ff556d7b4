"""Turn any uploaded image into the 28x28 grayscale input a model was trained on.

A pure function of the image bytes and the model's preprocessing profile. The training script uses
it for folder datasets too, so a model never sees pixels prepared differently from what it serves.

Profiles:
- `mnist`: centre a single glyph the way MNIST itself was made: light ink on a dark background,
  cropped to the ink, scaled so the longer side is 20 px, placed in 28x28 by its centre of mass.
- `fit`: plain grayscale letterbox resize to 28x28 (Fashion-MNIST, folders of photos).

The output is float32 in [0, 255]; the exported model does its own scaling.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import BlankImageError, ImageTooLargeError, InvalidImageError
from app.model_format import INPUT_SIDE, PreprocessingProfile

MNIST_BOX_SIDE = 20
DEFAULT_MAX_PIXELS = 50_000_000
# Large images are shrunk to this many pixels on their longer side before any array work: plenty
# for a 20 px digit, and it makes a 12-megapixel photo cost about as much as a thumbnail.
WORKING_MAX_SIDE = 96
# The thinnest stroke, in pixels of the final 20 px box, that MNIST digits have. Thinner strokes
# (a fine pen photographed large) are thickened before scaling so they do not fade away.
MIN_STROKE_WIDTH = 1.8

SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "DIB", "WEBP", "TIFF")
MIN_INK_CONTRAST = 24
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Where an orientation can be recorded besides TIFF tags; reading it costs more than decoding a
# small PNG, so images that carry none of these skip it.
_ORIENTATION_METADATA = frozenset({"exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif"})


def preprocess(
    data: bytes,
    profile: PreprocessingProfile | str = PreprocessingProfile.MNIST,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode `data` and return a float32 (28, 28) array in [0, 255], light ink on dark."""
    image = open_image(data, max_pixels=max_pixels)
    return preprocess_image(image, profile)


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read only the header, refusing unknown formats and decompression bombs before decoding."""
    if not data:
        raise InvalidImageError("The upload is empty.")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"The image has too many pixels: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidImageError(
            f"Not a decodable image. Supported formats: {', '.join(SUPPORTED_FORMATS[:-1])} and "
            f"{SUPPORTED_FORMATS[-1]}."
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}."
        )
    return image


def preprocess_image(image: Image.Image, profile: PreprocessingProfile | str) -> np.ndarray:
    profile = PreprocessingProfile(profile)
    gray = _decode_grayscale(image)
    if profile is PreprocessingProfile.MNIST:
        return _centre_like_mnist(gray)
    return _letterbox(gray)


def _decode_grayscale(image: Image.Image) -> np.ndarray:
    """Decode at most WORKING_MAX_SIDE on the longer side; float32 grayscale in [0, 255]."""
    if image.format in ("JPEG", "MPO"):
        # DCT scaling decodes a large JPEG straight at 1/2, 1/4 or 1/8 of its size, and only the
        # luma channel: several times faster and smaller than a full decode.
        scale = WORKING_MAX_SIDE / max(image.size)
        image.draft("L", (round(image.width * scale), round(image.height * scale)))
    try:
        image.load()
        if image.format == "TIFF" or not _ORIENTATION_METADATA.isdisjoint(image.info):
            ImageOps.exif_transpose(image, in_place=True)
        image = _to_working_mode(image)
        if max(image.size) > WORKING_MAX_SIDE:
            image.thumbnail((WORKING_MAX_SIDE, WORKING_MAX_SIDE), Image.Resampling.BOX)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"The image has too many pixels: {error}") from None
    except Exception as error:  # Pillow raises many types for corrupt data; all mean the same.
        raise InvalidImageError(f"The image could not be decoded: {error}") from None

    if image.mode == "LA":
        luma_alpha = np.asarray(image, dtype=np.float32)
        return _composite_on_contrasting_background(luma_alpha[..., 0], luma_alpha[..., 1] / 255)
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        return _stretch_to_8_bit(values)
    return values


def _to_working_mode(image: Image.Image) -> Image.Image:
    """Convert to L, LA (transparency kept for compositing) or F (16/32-bit input)."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return image.convert("F")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        if image.mode not in ("RGBA", "LA"):
            image = image.convert("RGBA")
        return image.convert("LA")
    if image.mode == "L":
        return image
    if image.mode not in ("RGB", "1", "P", "CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB")
    return image.convert("L")


def _composite_on_contrasting_background(luma: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto whichever of black or white contrasts with the visible content.

    A canvas drawing is dark strokes on a transparent (black, alpha 0) background: compositing
    onto black would erase it, onto white keeps it.
    """
    opacity = float(alpha.sum())
    if opacity == 0:
        return np.zeros_like(luma)
    if opacity == alpha.size:
        return luma
    content_luma = float((luma * alpha).sum()) / opacity
    background = 255.0 if content_luma < 128 else 0.0
    return np.asarray(luma * alpha + background * (1 - alpha), dtype=np.float32)


def _stretch_to_8_bit(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit and float images have no fixed white level: use their own range."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return np.zeros_like(values)
    return (values - low) * (255 / (high - low))


def _centre_like_mnist(gray: np.ndarray) -> np.ndarray:
    if _already_like_mnist(gray):
        return gray
    ink = _clean_ink(_light_on_dark(gray))
    rows = np.flatnonzero(ink.any(axis=1))
    columns = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise BlankImageError("The image is blank: there is nothing to classify.")
    glyph = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    glyph = _scale_into_box(glyph, MNIST_BOX_SIDE)
    return _place_by_centre_of_mass(glyph)


def _already_like_mnist(gray: np.ndarray) -> bool:
    """28x28, light ink on a black frame, ink box 20 px, centred by mass: MNIST's own format.

    Such an image would come out of the full pipeline unchanged (to within a gray level), so it
    skips it: the common case of a client sending MNIST-style digits stays cheap.
    Everything is read off the row and column sums (pixels are never negative).
    """
    if gray.shape != (INPUT_SIDE, INPUT_SIDE):
        return False
    row_sums, column_sums = gray.sum(axis=1), gray.sum(axis=0)
    if row_sums[:2].any() or row_sums[-2:].any() or column_sums[:2].any() or column_sums[-2:].any():
        return False
    rows, columns = np.flatnonzero(row_sums), np.flatnonzero(column_sums)
    if rows.size == 0 or max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 != MNIST_BOX_SIDE:
        return False
    if float(gray.max()) < 255 - MIN_INK_CONTRAST:  # Faint ink still needs stretching.
        return False
    row_centre, column_centre = _centre_of_mass_from_sums(row_sums, column_sums)
    return abs(row_centre - INPUT_SIDE / 2) <= 1 and abs(column_centre - INPUT_SIDE / 2) <= 1


def _light_on_dark(gray: np.ndarray) -> np.ndarray:
    """MNIST is light ink on black; invert dark-on-light images (paper, whiteboards, canvases)."""
    border = _border(gray)
    midpoint = (float(gray.min()) + float(gray.max())) / 2
    if float(np.median(border)) > midpoint:
        return 255 - gray
    return gray


def _clean_ink(gray: np.ndarray) -> np.ndarray:
    """Remove uneven lighting, paper texture and compression noise; stretch the ink to 255.

    Clean input (an MNIST digit, a canvas drawing) has a flat zero background and passes through
    unchanged: every estimate below is then exactly zero. The robust statistics come from 256-level
    histograms: a handful of vector operations instead of a sort per statistic.
    """
    if float(gray.max()) - float(gray.min()) < MIN_INK_CONTRAST:
        return np.zeros_like(gray)
    histogram = _histogram(gray)
    median, spread = _median_and_spread(histogram)
    # Surely background: below Otsu's threshold and near the median, so thin ink cannot skew it.
    background = gray <= min(median + 3 * spread, _otsu_threshold(histogram))
    if not background.any():
        return np.zeros_like(gray)
    flattened = gray - _illumination(gray, background)
    # Residuals may be slightly negative; shift them into the histogram's range.
    residual_median, residual_spread = _median_and_spread(
        _histogram(flattened[background], offset=_RESIDUAL_OFFSET)
    )
    noise_floor = max(residual_median - _RESIDUAL_OFFSET + 4 * residual_spread, 0.0)
    ink = _histogram(flattened)
    ink[: int(noise_floor) + 1] = 0
    if not ink.any():
        return np.zeros_like(gray)
    ink_level = _quantile(ink, 0.99)
    if ink_level - noise_floor < MIN_INK_CONTRAST:  # Only noise is left.
        return np.zeros_like(gray)
    cleaned = (flattened - noise_floor) * (255 / (ink_level - noise_floor))
    return np.clip(cleaned, 0, 255)


_LEVELS = np.arange(256)
_RESIDUAL_OFFSET = 128


def _histogram(values: np.ndarray, offset: float = 0) -> np.ndarray:
    """Counts of `values + offset` rounded to the 256 gray levels."""
    levels = np.clip(values + (offset + 0.5), 0, 255).astype(np.uint8)
    return np.bincount(levels.ravel(), minlength=256)


def _quantile(histogram: np.ndarray, fraction: float) -> int:
    cumulative = np.cumsum(histogram)
    return int(np.searchsorted(cumulative, fraction * cumulative[-1]))


def _median_and_spread(histogram: np.ndarray) -> tuple[int, float]:
    """The median level and a robust standard deviation (1.4826 x median absolute deviation)."""
    median = _quantile(histogram, 0.5)
    distances = np.bincount(np.abs(_LEVELS - median), weights=histogram, minlength=256)
    return median, 1.4826 * _quantile(distances, 0.5)


def _otsu_threshold(histogram: np.ndarray) -> float:
    """The level that best splits the histogram into two classes (Otsu's method)."""
    weights = histogram.astype(np.float64)
    below = np.cumsum(weights)
    above = below[-1] - below
    below_sum = np.cumsum(weights * _LEVELS)
    mean_below = below_sum / np.maximum(below, 1)
    mean_above = (below_sum[-1] - below_sum) / np.maximum(above, 1)
    between = below * above * (mean_below - mean_above) ** 2
    return float(np.argmax(between)) + 0.5


def _illumination(gray: np.ndarray, background: np.ndarray) -> np.ndarray | float:
    """A smooth quadratic surface fitted to the background pixels (uneven lighting, shadows)."""
    samples = gray[background]
    if samples.size < 12 or float(samples.max()) - float(samples.min()) < 1:
        return float(samples.mean()) if samples.size else 0.0
    height, width = gray.shape
    rows, columns = np.nonzero(background)
    # A few hundred samples pin down six coefficients; more only cost time.
    step = max(1, rows.size // 512)
    y = rows[::step] / max(height - 1, 1)
    x = columns[::step] / max(width - 1, 1)
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y])
    normal = design @ design.T + np.eye(6) * 1e-6
    c = np.linalg.solve(normal, design @ samples[::step])
    x_grid = np.arange(width) / max(width - 1, 1)
    y_grid = (np.arange(height) / max(height - 1, 1))[:, np.newaxis]
    surface = c[0] + c[1] * x_grid + c[2] * y_grid + c[3] * x_grid**2 + c[4] * x_grid * y_grid
    return np.asarray(surface + c[5] * y_grid**2, dtype=np.float32)


def _scale_into_box(glyph: np.ndarray, box_side: int) -> np.ndarray:
    height, width = glyph.shape
    scale = box_side / max(height, width)
    if scale == 1:
        return glyph
    glyph = _thicken_thin_strokes(glyph, scale)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(glyph.astype(np.float32)).resize(
        new_size, Image.Resampling.LANCZOS if scale > 1 else Image.Resampling.BOX
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 255)


def _thicken_thin_strokes(glyph: np.ndarray, scale: float) -> np.ndarray:
    """Dilate strokes that scaling would leave thinner than MNIST's pen."""
    ink = glyph > 127
    area = int(ink.sum())
    if area == 0:
        return glyph
    edge = ink & ~(
        np.pad(ink, 1)[:-2, 1:-1]
        & np.pad(ink, 1)[2:, 1:-1]
        & np.pad(ink, 1)[1:-1, :-2]
        & np.pad(ink, 1)[1:-1, 2:]
    )
    # For long thin strokes, area ~ width * length and the edge count ~ 2 * length.
    stroke_width = 2 * area / max(int(edge.sum()), 1)
    missing = MIN_STROKE_WIDTH / scale - stroke_width
    if missing < 1:
        return glyph
    radius = min(round(missing / 2), 8)
    padded = np.pad(glyph, radius)
    thick = glyph.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                window = padded[
                    radius + dy : radius + dy + glyph.shape[0],
                    radius + dx : radius + dx + glyph.shape[1],
                ]
                np.maximum(thick, window, out=thick)
    return thick


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass, in pixel indices."""
    return _centre_of_mass_from_sums(image.sum(axis=1), image.sum(axis=0))


def _centre_of_mass_from_sums(row_sums: np.ndarray, column_sums: np.ndarray) -> tuple[float, float]:
    mass = float(row_sums.sum())
    row_centre = float(row_sums @ np.arange(row_sums.size)) / mass
    column_centre = float(column_sums @ np.arange(column_sums.size)) / mass
    return row_centre, column_centre


def _border(image: np.ndarray) -> np.ndarray:
    """The outermost pixels: where the background shows if anything does."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def _place_by_centre_of_mass(glyph: np.ndarray) -> np.ndarray:
    height, width = glyph.shape
    row_centre, column_centre = _centre_of_mass(glyph)
    half = INPUT_SIDE / 2
    top = min(max(round(half - row_centre), 0), INPUT_SIDE - height)
    left = min(max(round(half - column_centre), 0), INPUT_SIDE - width)
    canvas = np.zeros((INPUT_SIDE, INPUT_SIDE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = glyph
    return canvas


def _letterbox(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    scale = INPUT_SIDE / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(
        Image.fromarray(gray.astype(np.float32)).resize(
            (new_width, new_height),
            Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR,
        ),
        dtype=np.float32,
    )
    border = _border(resized)
    canvas = np.full((INPUT_SIDE, INPUT_SIDE), float(np.median(border)), dtype=np.float32)
    top, left = (INPUT_SIDE - new_height) // 2, (INPUT_SIDE - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    return np.clip(canvas, 0, 255)
