"""Realistic uploads: MNIST test digits rendered the ways people actually send them.

    python -m model.uploads --data ../shared/data/mnist.npz --out /tmp/uploads   # look at them
    python -m model.evaluate model/export/mnist/1 --uploads --data ../shared/data/mnist.npz

Each category renders digits one way: the untouched 28x28 PNG, dark ink scanned off paper, an
HTML canvas export, a phone photo, a thick marker or a fine pen, every file format and mode the
service accepts, camera JPEGs stored rotated with an EXIF tag, and more. The output depends only
on the digits, the category and the seed, so the same uploads can be scored in-process and over
HTTP, today and after a change.

Only pass digits the model was not trained on (the official test split): these are for scoring.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from app.errors import ServiceError
from app.model_format import PreprocessingProfile
from app.preprocess import preprocess

# A rendered upload: the encoded bytes and the file extension.
Rendered = tuple[bytes, str]
Renderer = Callable[[np.ndarray, np.random.Generator], Rendered]


@dataclass(frozen=True)
class Upload:
    category: str
    digit_index: int  # Into the source digits.
    label: int
    data: bytes
    extension: str

    @property
    def filename(self) -> str:
        return f"{self.category}-{self.digit_index:05d}-{self.label}.{self.extension}"


# ---------------------------------------------------------------------------------------------
# Glyphs: a digit as an ink-coverage mask in [0, 1] at a chosen height.


def _digit_box(digit: np.ndarray) -> np.ndarray:
    rows, columns = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    return digit[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1].astype(np.float32) / 255


def natural_glyph(digit: np.ndarray, height: int, threshold: float = 0.45) -> np.ndarray:
    """The digit's own strokes (MNIST's pen, width varying), scaled to `height` px, crisp edges."""
    box = _digit_box(digit)
    scale = height / box.shape[0]
    width = max(1, round(box.shape[1] * scale))
    resample = Image.Resampling.BICUBIC if scale >= 1 else Image.Resampling.LANCZOS
    smooth = np.asarray(Image.fromarray(box).resize((width, height), resample), dtype=np.float32)
    if scale <= 1:
        return np.asarray(np.clip(smooth, 0, 1), dtype=np.float32)
    # The smooth upscale ramps over ~`scale` pixels; steepen it to a ~1.5 px anti-aliased edge.
    return np.asarray(np.clip((smooth - threshold) * scale / 1.5 + 0.5, 0, 1), dtype=np.float32)


@dataclass(frozen=True)
class PenPath:
    """How a digit was written: the centre line of its strokes as segments (y0, x0, y1, x1) in
    the coordinates of its bounding box (`box_shape`: height, width), and the writer's stroke
    width as a share of its height."""

    segments: list[tuple[float, float, float, float]]
    box_shape: tuple[int, int]
    width: float


# Paths per digit (its bytes): several categories redraw the same digit with other pens.
_PEN_PATHS: dict[bytes, PenPath] = {}

# A digit whose strokes are wider than this share of its height was written with a pen so broad
# that it filled the loops (an 8 as a solid blob): the centre line of such strokes is not the
# path the pen took (that 8's is an S), so a thinner pen narrows the strokes instead.
BOLD_STROKE = 0.2
# Bold digits are narrowed to half their stroke, but no thinner than MNIST's usual stroke (this
# share of the height): eroded further, they lose their shape.
USUAL_STROKE = 0.1


def pen_glyph(digit: np.ndarray, height: int, pen_width: float) -> np.ndarray:
    """The digit written with a round pen `pen_width` px wide, `height` px tall in all.

    A pen at least as wide as the writer's widens the writer's own strokes (exactly what that
    pen would have drawn along the same path); a thinner one redraws the centre line, or
    narrows the strokes of a bold digit."""
    path = pen_path(digit)
    # Height before widening: the widened glyph grows by the difference in stroke width.
    inner_height = (height - pen_width) / (1 - path.width)
    if pen_width >= path.width * inner_height:
        growth = (pen_width - path.width * inner_height) / 2
        return _widened(natural_glyph(digit, max(4, round(inner_height))), growth)
    if path.width > BOLD_STROKE:
        target = max(pen_width, USUAL_STROKE * height, path.width * height / 2)
        return _narrowed(natural_glyph(digit, height), (path.width * height - target) / 2)
    return _redrawn(path, height, pen_width)


def _widened(glyph: np.ndarray, growth: float) -> np.ndarray:
    """The glyph's strokes `growth` px wider on every side, anti-aliased."""
    glyph = np.pad(glyph, int(np.ceil(growth)) + 1)
    distance = ndimage.distance_transform_edt(glyph < 0.5)
    return np.asarray(np.maximum(glyph, np.clip(growth + 0.5 - distance, 0, 1)), np.float32)


def _narrowed(glyph: np.ndarray, shrink: float) -> np.ndarray:
    """The glyph's strokes `shrink` px narrower on every side, anti-aliased."""
    # Smoothed first: eroding MNIST's pixel steps would leave ragged strokes.
    smooth = ndimage.gaussian_filter(glyph, glyph.shape[0] / 40)
    depth = ndimage.distance_transform_edt(smooth >= 0.5)
    return np.asarray(np.clip(depth - shrink, 0, 1), np.float32)


def _redrawn(path: PenPath, height: int, pen_width: float) -> np.ndarray:
    """The centre line drawn with a round pen."""
    fine = 4  # Drawn at 4x and reduced: anti-aliased edges.
    box_height, box_width = path.box_shape
    scale = (height - pen_width) / box_height
    width = max(1, round(box_width * scale + pen_width))
    margin = pen_width / 2
    canvas = Image.new("L", (width * fine, height * fine))
    draw = ImageDraw.Draw(canvas)
    radius = max(pen_width * fine / 2, 0.5)
    for y0, x0, y1, x1 in path.segments:
        start = ((x0 * scale + margin) * fine, (y0 * scale + margin) * fine)
        end = ((x1 * scale + margin) * fine, (y1 * scale + margin) * fine)
        draw.line([start, end], fill=255, width=max(1, round(2 * radius)))
        for x, y in (start, end):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    reduced = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(reduced, dtype=np.float32) / 255


def pen_path(digit: np.ndarray) -> PenPath:
    """The digit's pen path, computed once per digit."""
    key = digit.tobytes()
    cached = _PEN_PATHS.get(key)
    if cached is not None:
        return cached
    box = _digit_box(digit)
    upscale = 4
    big = Image.fromarray(box).resize(
        (box.shape[1] * upscale, box.shape[0] * upscale), Image.Resampling.BICUBIC
    )
    shape = np.asarray(big) > 0.45
    depth = ndimage.distance_transform_edt(shape)
    stroke_half_width = float(np.median(depth[_thin(shape)]))
    # Where MNIST's pen filled a small loop (a blob far thicker than the strokes), a thin pen
    # would have drawn the loop: hollow the blob out so the centre line goes round it.
    skeleton = _thin(shape & ~(depth > 1.8 * stroke_half_width))
    segments = []
    ys, xs = np.nonzero(skeleton)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny < skeleton.shape[0]) & (nx >= 0) & (nx < skeleton.shape[1])
        linked = inside.copy()
        linked[inside] = skeleton[ny[inside], nx[inside]]
        segments += [
            (y / upscale, x / upscale, (y + dy) / upscale, (x + dx) / upscale)
            for y, x in zip(ys[linked], xs[linked], strict=True)
        ]
    if not segments:  # A dot: draw it in place.
        segments = [
            (y / upscale, x / upscale, y / upscale, x / upscale)
            for y, x in zip(ys, xs, strict=True)
        ]
    box_height, box_width = box.shape
    path = PenPath(segments, (box_height, box_width), 2 * stroke_half_width / shape.shape[0])
    _PEN_PATHS[key] = path
    return path


def _thin(binary: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: the one-pixel-wide centre line of a binary shape."""
    image = np.pad(binary.astype(np.uint8), 1)
    while True:
        removed = False
        for step in (0, 1):
            p = np.pad(image, 1)
            p2, p3, p4 = p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:]
            p5, p6, p7 = p[2:, 2:], p[2:, 1:-1], p[2:, :-2]
            p8, p9 = p[1:-1, :-2], p[:-2, :-2]
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            neighbours = sum(ring[:8])
            transitions = sum((ring[i] == 0) & (ring[i + 1] == 1) for i in range(8))
            if step == 0:
                corner = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                corner = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (
                (image == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & corner
            )
            if remove.any():
                image[remove] = 0
                removed = True
        if not removed:
            return image[1:-1, 1:-1].astype(bool)


def rotated(mask: np.ndarray, degrees: float) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.float32))
    return np.asarray(
        image.rotate(degrees, Image.Resampling.BILINEAR, expand=True), dtype=np.float32
    )


def placed(
    glyph: np.ndarray, size: tuple[int, int], rng: np.random.Generator, centred: float = 0.0
) -> np.ndarray:
    """The glyph at a random (off-centre) position on a (height, width) canvas of zeros.

    `centred` in [0, 1] pulls the position towards the centre (1 = exactly centred)."""
    height, width = size
    glyph_height, glyph_width = glyph.shape
    if glyph_height > height or glyph_width > width:
        shrink = min(height / glyph_height, width / glyph_width)
        new_size = (max(1, int(glyph_width * shrink)), max(1, int(glyph_height * shrink)))
        glyph = np.asarray(Image.fromarray(glyph).resize(new_size, Image.Resampling.BOX))
        glyph_height, glyph_width = glyph.shape
    spare_y, spare_x = height - glyph_height, width - glyph_width
    top = round(spare_y * (0.5 * centred + (1 - centred) * rng.uniform()))
    left = round(spare_x * (0.5 * centred + (1 - centred) * rng.uniform()))
    canvas = np.zeros(size, dtype=np.float32)
    canvas[top : top + glyph_height, left : left + glyph_width] = glyph
    return canvas


def glyph_height_for(canvas_height: int, rng: np.random.Generator, low: float, high: float) -> int:
    return max(8, round(canvas_height * rng.uniform(low, high)))


# ---------------------------------------------------------------------------------------------
# Surfaces and ink.

INK_COLOURS = {
    "black": (25, 25, 30),
    "blue": (30, 45, 150),
    "blue-black": (25, 30, 70),
    "red": (175, 30, 35),
    "green": (25, 105, 55),
    "pencil": (85, 85, 90),
}
PAPER_TINTS = [(1.0, 1.0, 1.0), (1.0, 0.97, 0.9), (0.93, 0.96, 1.0), (1.0, 0.96, 0.72)]


def noise(size: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian noise; large fields repeat a 256x256 tile at a random offset (cheap, and no
    pattern survives the digit's scale)."""
    tile_shape = tuple(min(side, 256) if axis < 2 else side for axis, side in enumerate(size))
    tile = rng.standard_normal(tile_shape, dtype=np.float32) * np.float32(sigma)
    if tile_shape == size:
        return tile
    reps = [
        -(-side // tile_side) + 1 for side, tile_side in zip(size[:2], tile_shape, strict=False)
    ]
    tiled = np.tile(tile, reps + [1] * (len(size) - 2))
    top, left = int(rng.integers(tile_shape[0])), int(rng.integers(tile_shape[1]))
    return tiled[top : top + size[0], left : left + size[1]]


def smooth_field(size: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Low-frequency variation: an 8x8 grid of random values interpolated over the sheet."""
    coarse = Image.fromarray(rng.normal(0, sigma, (8, 8)).astype(np.float32))
    return np.asarray(coarse.resize((size[1], size[0]), Image.Resampling.BICUBIC))


def paper(
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    brightness: float,
    tint: tuple[float, float, float],
    grain: float,
) -> np.ndarray:
    """An RGB sheet in [0, 255] with paper grain (fine noise plus a faint low-frequency mottle)."""
    base = np.float32(brightness) + noise(size, rng, grain) + smooth_field(size, rng, grain)
    return np.asarray(base[..., np.newaxis] * np.asarray(tint, dtype=np.float32))


def lighting(size: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A multiplicative light field: a linear gradient in a random direction and a vignette."""
    height, width = size
    y = (np.arange(height, dtype=np.float32) / max(height - 1, 1) - 0.5)[:, np.newaxis]
    x = np.arange(width, dtype=np.float32) / max(width - 1, 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(0.5, 1) * strength * 2
    gradient = (np.cos(angle) * slope) * x + (np.sin(angle) * slope) * y
    vignette = (x * x + y * y) * np.float32(2 * rng.uniform(0, strength))
    return np.asarray(1 - strength / 2 + gradient - vignette, dtype=np.float32)


def inked(
    surface: np.ndarray, mask: np.ndarray, ink: tuple[int, int, int], opacity: float
) -> np.ndarray:
    coverage = (mask * np.float32(opacity))[..., np.newaxis]
    return surface * (1 - coverage) + np.asarray(ink, dtype=np.float32) * coverage


def to_image(rgb: np.ndarray, mode: str = "RGB") -> Image.Image:
    image = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def choose(rng: np.random.Generator, options: Sequence[object]) -> object:
    return options[int(rng.integers(len(options)))]


def random_size(rng: np.random.Generator, low: int, high: int) -> tuple[int, int]:
    """(height, width): the longer side in [low, high], aspect between 3:5 and 5:3."""
    long_side = int(rng.integers(low, high + 1))
    short_side = max(low // 2, round(long_side * rng.uniform(0.6, 1.0)))
    return (long_side, short_side) if rng.uniform() < 0.5 else (short_side, long_side)


# ---------------------------------------------------------------------------------------------
# Categories.


def mnist_png(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    return encode(Image.fromarray(digit), "PNG"), "png"


def _paper_scan(
    digit: np.ndarray,
    rng: np.random.Generator,
    *,
    size_range: tuple[int, int] = (60, 800),
    height_range: tuple[float, float] = (0.25, 0.85),
) -> Image.Image:
    """Dark ink on white or off-white paper, flat light, the digit anywhere on the sheet."""
    size = random_size(rng, *size_range)
    glyph = natural_glyph(digit, glyph_height_for(size[0], rng, *height_range))
    mask = placed(glyph, size, rng)
    sheet = paper(
        size,
        rng,
        brightness=rng.uniform(228, 252),
        tint=choose(rng, PAPER_TINTS[:3]),  # type: ignore[arg-type]
        grain=rng.uniform(1, 4),
    )
    ink = choose(rng, ["black", "blue-black", "blue", "pencil"])
    return to_image(inked(sheet, mask, INK_COLOURS[ink], rng.uniform(0.8, 1.0)))  # type: ignore[index]


def scanned_paper(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _paper_scan(digit, rng)
    if rng.uniform() < 0.5:
        image = image.convert("L")
    if rng.uniform() < 0.5:
        return encode(image, "JPEG", quality=int(rng.integers(60, 96))), "jpg"
    return encode(image, "PNG"), "png"


def _canvas(digit: np.ndarray, rng: np.random.Generator, colour: tuple[int, int, int]) -> bytes:
    side = int(rng.integers(200, 601))
    size = (side, int(side * rng.uniform(0.8, 1.5)))
    height = glyph_height_for(side, rng, 0.45, 0.9)
    brush = side / 280 * (rng.uniform(3, 8) if rng.uniform() < 0.5 else rng.uniform(12, 28))
    mask = placed(pen_glyph(digit, height, brush), size, rng, centred=0.5)
    rgba = np.zeros((*size, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.round(mask * 255).astype(np.uint8)
    rgba[rgba[..., 3] == 0] = 0  # Canvases export fully transparent pixels as transparent black.
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def canvas_drawing(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    if rng.uniform() < 0.5:
        colour: tuple[int, int, int] = (0, 0, 0)
    else:
        hue = Image.new("HSV", (1, 1), (int(rng.integers(256)), 255, int(rng.integers(90, 256))))
        colour = hue.convert("RGB").getpixel((0, 0))  # type: ignore[assignment]
    return _canvas(digit, rng, colour), "png"


# Photos larger than this are rendered at a fraction of their size and enlarged: a camera's
# pixels are soft anyway, and rendering 12 megapixels directly takes seconds.
PHOTO_RENDER_MAX_SIDE = 1600


def _photo(digit: np.ndarray, rng: np.random.Generator, size_range: tuple[int, int]) -> Image.Image:
    """A phone photo of a digit on paper: tinted paper, uneven light, rotation, blur, noise."""
    full_size = random_size(rng, *size_range)
    reduction = max(1, -(-max(full_size) // PHOTO_RENDER_MAX_SIDE))
    size = (full_size[0] // reduction, full_size[1] // reduction)
    glyph = natural_glyph(digit, glyph_height_for(size[0], rng, 0.25, 0.7))
    glyph = rotated(glyph, rng.uniform(-12, 12))
    mask = placed(glyph, size, rng)
    sheet = paper(
        size,
        rng,
        brightness=rng.uniform(170, 245),
        tint=choose(rng, PAPER_TINTS),  # type: ignore[arg-type]
        grain=rng.uniform(1, 3),
    )
    ink = INK_COLOURS[choose(rng, ["black", "blue", "blue-black", "red", "green", "pencil"])]  # type: ignore[index]
    scene = inked(sheet, mask, ink, rng.uniform(0.7, 0.95))
    scene *= lighting(size, rng, rng.uniform(0.1, 0.4))[..., np.newaxis]
    image = to_image(scene)
    blur = rng.uniform(0.3, 1.3) * max(full_size) / 1000 / reduction
    image = image.filter(ImageFilter.GaussianBlur(blur))
    if reduction > 1:
        image = image.resize((full_size[1], full_size[0]), Image.Resampling.BICUBIC)
    noisy = np.asarray(image, dtype=np.float32) + noise((*full_size, 3), rng, rng.uniform(2, 7))
    return to_image(noisy)


def phone_photo(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _photo(digit, rng, (480, 1600))
    return encode(image, "JPEG", quality=int(rng.integers(70, 93))), "jpg"


def camera_full_resolution(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _photo(digit, rng, (3000, 4032))
    return encode(image, "JPEG", quality=int(rng.integers(80, 96))), "jpg"


def exif_rotated_photo(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """A camera JPEG whose pixels are stored rotated, with the EXIF Orientation that undoes it."""
    upright = _photo(digit, rng, (480, 1600))
    orientation = int(choose(rng, [3, 6, 8]))  # type: ignore[call-overload]
    # Orientation 6 means "rotate 90 degrees clockwise to display": the sensor stored it turned
    # the other way. Pillow's `exif_transpose` applies ROTATE_270 for 6 and ROTATE_90 for 8.
    stored = {
        3: upright.transpose(Image.Transpose.ROTATE_180),
        6: upright.transpose(Image.Transpose.ROTATE_90),
        8: upright.transpose(Image.Transpose.ROTATE_270),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=int(rng.integers(75, 93)), exif=exif)
    return data, "jpg"


def squared_paper(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """A scan or photo of squared (grid) paper: faint blue or grey lines every 4-8 % of the
    side, the digit written across several squares."""
    size = random_size(rng, 200, 900)
    height, width = size
    glyph = natural_glyph(digit, glyph_height_for(height, rng, 0.25, 0.7))
    mask = placed(glyph, size, rng)
    sheet = paper(size, rng, brightness=rng.uniform(225, 250), tint=(1.0, 1.0, 1.0), grain=2)
    spacing = max(height, width) * rng.uniform(0.04, 0.08)
    line_width = max(1.0, spacing * rng.uniform(0.04, 0.1))
    rows = np.arange(height, dtype=np.float32)[:, np.newaxis]
    columns = np.arange(width, dtype=np.float32)[np.newaxis, :]
    offset_y, offset_x = rng.uniform(0, spacing, 2)
    # How far past the middle between two lines each pixel is: at the line, half a spacing.
    half = spacing / 2 - line_width / 2
    across_rows = np.abs((rows - offset_y) % spacing - spacing / 2) - half
    across_columns = np.abs((columns - offset_x) % spacing - spacing / 2) - half
    on_line = np.clip(np.maximum(across_rows, across_columns) + 0.5, 0, 1)
    grid_colour = choose(rng, [(120, 160, 215), (150, 150, 155), (110, 190, 170)])
    sheet = inked(sheet, on_line.astype(np.float32), grid_colour, rng.uniform(0.35, 0.7))  # type: ignore[arg-type]
    ink = INK_COLOURS[choose(rng, ["black", "blue-black", "blue", "pencil"])]  # type: ignore[index]
    image = to_image(inked(sheet, mask, ink, rng.uniform(0.85, 1.0)))
    if rng.uniform() < 0.5:  # Photographed: uneven light, blur, noise.
        lit = (
            np.asarray(image, dtype=np.float32)
            * lighting(size, rng, rng.uniform(0.05, 0.3))[..., np.newaxis]
        )
        image = to_image(lit).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        noisy = np.asarray(image, dtype=np.float32) + noise((*size, 3), rng, rng.uniform(2, 5))
        image = to_image(noisy)
    return encode(image, "JPEG", quality=int(rng.integers(75, 95))), "jpg"


# Surfaces a sheet is put down on: (base RGB, grain, wood stripes or not).
DESKS = {
    "light wood": ((190, 150, 105), 6.0, True),
    "dark wood": ((105, 70, 45), 6.0, True),
    "grey laminate": ((150, 150, 148), 3.0, False),
    "dark surface": ((45, 45, 50), 3.0, False),
    "blue cloth": ((60, 80, 125), 8.0, False),
}


def _desk(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    base, grain, striped = DESKS[str(choose(rng, list(DESKS)))]
    surface = paper(size, rng, brightness=1.0, tint=(1.0, 1.0, 1.0), grain=0.0)
    surface = surface * np.asarray(base, dtype=np.float32)
    surface += noise((*size, 1), rng, grain) + smooth_field(size, rng, grain * 2)[..., np.newaxis]
    if striped:  # Wood grain: wavy stripes along one direction.
        height, width = size
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        along = x if rng.uniform() < 0.5 else y
        across = y if along is x else x
        period = rng.uniform(6, 20) * max(size) / 400
        wave = np.sin((across + 4 * np.sin(along / (period * 7))) * 2 * np.pi / period)
        surface *= (1 + 0.06 * wave)[..., np.newaxis]
    return surface


def _keyboard(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A dark keyboard: keys in rows each shifted a third of a key, a darker frame between them,
    a light legend on every key."""
    height, width = size
    key = max(12, round(min(size) * rng.uniform(0.05, 0.09)))
    pitch = key + max(2, key // 6)
    rows, columns = np.mgrid[0:height, 0:width]
    across = rows % pitch
    along = (columns + (rows // pitch) * (key // 3)) % pitch
    on_key = (across < key) & (along < key)
    legend = (
        on_key
        & (np.abs(across - 0.4 * key) <= max(1, key // 10))
        & (np.abs(along - key / 2) < key / 5)
    )
    level = rng.uniform(25, 60)
    surface = np.full((*size, 3), 0.7 * level, dtype=np.float32)
    surface[on_key] = level
    surface[legend] = rng.uniform(150, 220)
    surface += noise((*size, 1), rng, 2.0)
    return surface


def sheet_on_desk(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """A sheet lying on a desk, photographed from a little off straight above: the sheet a
    skewed quadrilateral (corners moved by up to ~12 % of the side), the desk showing past one to
    four of its edges, a soft shadow across one side, blur, noise, JPEG."""
    return _sheet_photographed(digit, rng, _desk)


def sheet_on_keyboard(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """The same sheet lying on a keyboard: dark keys with light legends past its edges."""
    return _sheet_photographed(digit, rng, _keyboard)


def _sheet_photographed(
    digit: np.ndarray,
    rng: np.random.Generator,
    surface: Callable[[tuple[int, int], np.random.Generator], np.ndarray],
) -> Rendered:
    height, width = random_size(rng, 480, 1280)
    sheet_size = (height, width)
    glyph = natural_glyph(digit, glyph_height_for(height, rng, 0.12, 0.45))
    glyph = rotated(glyph, rng.uniform(-10, 10))
    # The digit away from the sheet's edges, where a hand writes.
    inner = (int(height * 0.7), int(width * 0.7))
    canvas = np.zeros(sheet_size, dtype=np.float32)
    top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
    canvas[top : top + inner[0], left : left + inner[1]] = placed(glyph, inner, rng)
    sheet = paper(
        sheet_size,
        rng,
        brightness=rng.uniform(200, 248),
        tint=choose(rng, PAPER_TINTS),  # type: ignore[arg-type]
        grain=rng.uniform(1, 3),
    )
    ink = INK_COLOURS[choose(rng, ["black", "blue", "blue-black", "pencil"])]  # type: ignore[index]
    sheet = inked(sheet, canvas, ink, rng.uniform(0.75, 0.95))
    # Where the sheet's corners land in the photo: pulled in from the frame's corners on the
    # sides where the desk shows, pushed out (cut off by the frame) elsewhere, then jittered.
    shown = rng.permutation(4)[: int(rng.integers(1, 5))]  # Edges: top, right, bottom, left.
    inset = [
        rng.uniform(0.03, 0.18) if edge in shown else -rng.uniform(0.0, 0.08) for edge in range(4)
    ]
    in_top, in_right, in_bottom, in_left = inset
    jitter = 0.12 * min(height, width)
    corners = np.array(
        [
            [in_left * width, in_top * height],
            [(1 - in_right) * width, in_top * height],
            [(1 - in_right) * width, (1 - in_bottom) * height],
            [in_left * width, (1 - in_bottom) * height],
        ],
        dtype=np.float32,
    ) + rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32)
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(source, corners)
    flat_sheet = cv2.warpPerspective(sheet, warp, (width, height), flags=cv2.INTER_LINEAR)
    coverage = cv2.warpPerspective(
        np.ones(sheet_size, dtype=np.float32), warp, (width, height), flags=cv2.INTER_LINEAR
    )[..., np.newaxis]
    scene = flat_sheet * coverage + surface((height, width), rng) * (1 - coverage)
    # A soft shadow (a hand, the phone) darkening one side, with a blurred edge.
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    distance = (np.cos(angle) * (x / width - 0.5) + np.sin(angle) * (y / height - 0.5)) / 0.1
    edge = rng.uniform(0.15, 0.45) / 0.1
    softness = rng.uniform(0.3, 1.5)
    shadow = 1 - rng.uniform(0.15, 0.45) / (1 + np.exp(-(distance - edge) / softness))
    scene *= shadow[..., np.newaxis]
    scene *= lighting((height, width), rng, rng.uniform(0.05, 0.25))[..., np.newaxis]
    image = to_image(scene).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.4, 1.4) * max(height, width) / 1000)
    )
    noisy = np.asarray(image, dtype=np.float32) + noise((height, width, 3), rng, rng.uniform(2, 6))
    return encode(to_image(noisy), "JPEG", quality=int(rng.integers(70, 93))), "jpg"


def _stroke_on_paper(
    digit: np.ndarray, rng: np.random.Generator, pen: Callable[[int], float]
) -> Image.Image:
    size = random_size(rng, 120, 800)
    height = glyph_height_for(size[0], rng, 0.3, 0.85)
    mask = placed(pen_glyph(digit, height, pen(height)), size, rng)
    sheet = paper(size, rng, brightness=rng.uniform(232, 252), tint=(1, 1, 1), grain=2)
    ink = INK_COLOURS[choose(rng, ["black", "blue", "blue-black"])]  # type: ignore[index]
    return to_image(inked(sheet, mask, ink, rng.uniform(0.85, 1.0)))


def _jpeg_or_png(image: Image.Image, rng: np.random.Generator) -> Rendered:
    if rng.uniform() < 0.5:
        return encode(image, "JPEG", quality=int(rng.integers(75, 96))), "jpg"
    return encode(image, "PNG"), "png"


def thick_marker(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _stroke_on_paper(digit, rng, lambda height: height * rng.uniform(0.12, 0.2))
    return _jpeg_or_png(image, rng)


def fine_pen(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _stroke_on_paper(digit, rng, lambda height: rng.uniform(1.2, 2.5))
    return _jpeg_or_png(image, rng)


def _format_source(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    return _paper_scan(digit, rng, size_range=(80, 500), height_range=(0.4, 0.85))


def gif(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    return encode(_format_source(digit, rng), "GIF"), "gif"


def bmp(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _format_source(digit, rng)
    return encode(image if rng.uniform() < 0.5 else image.convert("L"), "BMP"), "bmp"


def webp_lossy(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _format_source(digit, rng)
    return encode(image, "WEBP", quality=int(rng.integers(40, 91))), "webp"


def webp_lossless(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    return encode(_format_source(digit, rng), "WEBP", lossless=True), "webp"


def tiff(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _format_source(digit, rng)
    compression = choose(rng, ["raw", "tiff_lzw", "tiff_adobe_deflate"])
    return encode(image, "TIFF", compression=compression), "tif"


def png_16_bit(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """16-bit grayscale, as scanners and scientific cameras write it; not always full range."""
    gray = np.asarray(_format_source(digit, rng).convert("L"), dtype=np.float64)
    low, high = rng.uniform(0, 8000), rng.uniform(40000, 65535)
    values = low + gray / 255 * (high - low)
    return encode(Image.fromarray(values.round().astype(np.uint16)), "PNG"), "png"


def png_16_bit_widened(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """An 8-bit scan widened to 16 bits the plain way converters do it: x257 (the full range),
    x256, or as 12-bit data (0-4095) in a 16-bit container. Half are clean scans: flat paper,
    no grain, as a scanner's cleanup leaves them."""
    if rng.uniform() < 0.5:
        source = _format_source(digit, rng).convert("L")
    else:
        height, width = random_size(rng, 80, 500)
        glyph = natural_glyph(digit, glyph_height_for(height, rng, 0.4, 0.85))
        mask = placed(glyph, (height, width), rng)
        paper_level, ink_level = rng.integers(235, 256), rng.integers(10, 70)
        source = Image.fromarray(
            np.rint(paper_level - mask * (paper_level - ink_level)).astype(np.uint8)
        )
    gray = np.asarray(source, dtype=np.uint32)
    widen = choose(rng, ["x257", "x256", "12-bit"])
    if widen == "x257":
        values = gray * 257
    elif widen == "x256":
        values = gray * 256
    else:
        values = (gray * 4095 + 127) // 255
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG"), "png"


def palette_png(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    colours = int(choose(rng, [4, 8, 16, 64, 256]))  # type: ignore[call-overload]
    image = _format_source(digit, rng).quantize(colours)
    return encode(image, "PNG"), "png"


def cmyk_jpeg(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    image = _format_source(digit, rng).convert("CMYK")
    return encode(image, "JPEG", quality=int(rng.integers(75, 96))), "jpg"


def dark_mode_drawing(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """Light strokes on a dark app background (a drawing app in dark mode), saved as PNG."""
    size = random_size(rng, 200, 800)
    height = glyph_height_for(size[0], rng, 0.4, 0.85)
    brush = height * rng.uniform(0.04, 0.15)
    mask = placed(pen_glyph(digit, height, brush), size, rng, centred=0.5)
    background = np.full((*size, 3), rng.uniform(15, 60), dtype=np.float32)
    stroke = (int(rng.integers(180, 256)),) * 3
    return encode(to_image(inked(background, mask, stroke, 1.0)), "PNG"), "png"


def thumbnail(digit: np.ndarray, rng: np.random.Generator) -> Rendered:
    """A tiny image (16-48 px): a cropped, downscaled scan, as in an icon or a form field."""
    side = int(rng.integers(16, 49))
    size = (side, int(side * rng.uniform(0.8, 1.25)))
    glyph = natural_glyph(digit, glyph_height_for(side, rng, 0.6, 0.9))
    mask = placed(glyph, size, rng, centred=0.6)
    sheet = paper(size, rng, brightness=rng.uniform(225, 255), tint=(1, 1, 1), grain=1.5)
    return _jpeg_or_png(to_image(inked(sheet, mask, INK_COLOURS["black"], 0.95), "L"), rng)


CATEGORIES: dict[str, Renderer] = {
    "mnist_png": mnist_png,
    "scanned_paper": scanned_paper,
    "canvas_drawing": canvas_drawing,
    "phone_photo": phone_photo,
    "camera_full_resolution": camera_full_resolution,
    "exif_rotated_photo": exif_rotated_photo,
    "thick_marker": thick_marker,
    "fine_pen": fine_pen,
    "dark_mode_drawing": dark_mode_drawing,
    "thumbnail": thumbnail,
    "gif": gif,
    "bmp": bmp,
    "webp_lossy": webp_lossy,
    "webp_lossless": webp_lossless,
    "tiff": tiff,
    "png_16_bit": png_16_bit,
    "png_16_bit_widened": png_16_bit_widened,
    "palette_png": palette_png,
    "cmyk_jpeg": cmyk_jpeg,
    "sheet_on_desk": sheet_on_desk,
    "squared_paper": squared_paper,
    "sheet_on_keyboard": sheet_on_keyboard,
}
CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "tif": "image/tiff",
}


def _render(category: str, digit: np.ndarray, label: int, digit_index: int, seed: int) -> Upload:
    number = list(CATEGORIES).index(category)
    rng = np.random.default_rng([seed, number, digit_index])
    data, extension = CATEGORIES[category](digit, rng)
    return Upload(category, digit_index, label, data, extension)


def choose_digits(count: int, size: int, seed: int, category: str | None = None) -> np.ndarray:
    """A fixed sample of `size` of the `count` source digits: the same for every category, or
    one of its own for `category`."""
    stream = [seed] if category is None else [seed, list(CATEGORIES).index(category)]
    rng = np.random.default_rng(stream)
    return np.sort(rng.choice(count, size=min(size, count), replace=False))


def generate(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    per_category: int,
    categories: Sequence[str] = tuple(CATEGORIES),
    seed: int = 0,
    workers: int = 1,
    own_digits: bool = False,
) -> Iterator[Upload]:
    """The same `per_category` digits rendered as every category, in a fixed order (category,
    then digit index): categories differ only in how the digits are rendered. With
    `own_digits`, each category renders a sample of its own (more digits in all: a rare digit
    counts once, not once per category)."""
    plan = [
        (category, choose_digits(len(images), per_category, seed, category if own_digits else None))
        for category in categories
    ]
    return _render_all(images, labels, plan, seed, workers)


def _render_all(
    images: np.ndarray,
    labels: np.ndarray,
    plan: Sequence[tuple[str, np.ndarray]],
    seed: int,
    workers: int,
) -> Iterator[Upload]:
    unknown = {category for category, _ in plan} - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; have {list(CATEGORIES)}")
    jobs = [
        (category, images[index], int(labels[index]), int(index), seed)
        for category, digits in plan
        for index in digits
    ]
    if workers <= 1:
        yield from (_render(*job) for job in jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_render, *zip(*jobs, strict=True), chunksize=16)


# Rendered for training: every kind except the untouched PNG (the clean digits are there
# already) and full-resolution camera photos (seconds each to render, and after decoding the
# same pixels as phone photos).
TRAINING_CATEGORIES = tuple(
    category for category in CATEGORIES if category not in ("mnist_png", "camera_full_resolution")
)


def rendered_training_inputs(
    images: np.ndarray, labels: np.ndarray, *, count: int, seed: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """`count` training digits rendered as uploads and turned back into model inputs by the
    service's own preprocessing: uint8 (N, 28, 28) and their labels.

    Pass training digits only: the test split is for scoring these renderings."""
    # The categories share `count` as evenly as it divides, each rendering digits of its own:
    # a digit is seen in more ways than one, but not in every way.
    share, remainder = divmod(count, len(TRAINING_CATEGORIES))
    plan = [
        (category, choose_digits(len(images), share + (number < remainder), seed, category))
        for number, category in enumerate(TRAINING_CATEGORIES)
    ]
    inputs, targets = [], []
    for upload in _render_all(images, labels, plan, seed, workers):
        try:
            pixels = preprocess(upload.data, PreprocessingProfile.MNIST)
        except ServiceError:
            continue  # Nothing left of the digit to learn from.
        inputs.append(np.round(pixels).astype(np.uint8))
        targets.append(upload.label)
    return np.stack(inputs), np.asarray(targets, dtype=np.int64)


def write_files(files: Iterable[tuple[str, str, bytes]], out: Path) -> int:
    """Each (folder, file name, bytes) written under `out`; how many were."""
    count = 0
    for folder, name, data in files:
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / folder / name).write_bytes(data)
        count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write realistic uploads of MNIST test digits.")
    parser.add_argument("--data", type=Path, required=True, help="MNIST .npz (uses x_test)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-category", type=int, default=20)
    parser.add_argument("--categories", help=f"comma-separated, of: {', '.join(CATEGORIES)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with np.load(args.data) as data:
        images, labels = data["x_test"], data["y_test"]
    categories = args.categories.split(",") if args.categories else list(CATEGORIES)
    uploads = generate(
        images, labels, per_category=args.per_category, categories=categories, seed=args.seed
    )
    count = write_files(((u.category, u.filename, u.data) for u in uploads), args.out)
    print(f"Wrote {count} uploads to {args.out}")


if __name__ == "__main__":
    main()
