"""Uploads that are not one digit: letters, symbols, drawn shapes, scribbles, photos of things,
and numbers of several MNIST digits side by side, rendered the ways people send things.

    python -m model.non_digits --data ../shared/data/mnist.npz --out /tmp/non-digits   # look

Glyphs are drawn as MNIST-style arrays (light ink on black) and handed to the renderers of
`model.uploads` (a scan, a canvas drawing, a phone photo, a marker, a sheet on a desk ...), so
they reach the service exactly as a digit would. Photos are crops of the real photographs inside
scikit-image's wheel. Each kind has two disjoint sources, `train` and `test` (other fonts, other
photos, other digits and seeds), so a detector trained on one is scored on what it never saw.
The output depends only on the split, the kind, the index and the seed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from app.detector import Reason
from model import uploads

NOT_A_DIGIT = Reason.NOT_A_DIGIT.value
SEVERAL_DIGITS = Reason.SEVERAL_DIGITS.value


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"


@dataclass(frozen=True)
class NonDigit:
    kind: str
    index: int
    reason: str  # NOT_A_DIGIT or SEVERAL_DIGITS: what the service should say.
    rendering: str  # The upload category it was rendered as, or "photo".
    data: bytes
    extension: str

    @property
    def filename(self) -> str:
        return f"{self.kind}-{self.index:05d}-{self.rendering}.{self.extension}"


# ---------------------------------------------------------------------------------------------
# Sources, disjoint between the splits.


def matplotlib_fonts() -> Path:
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"


FONTS = {
    Split.TRAIN: (
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSansMono-Bold.ttf",
        "cmss10.ttf",
        "cmtt10.ttf",
    ),
    Split.TEST: (
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
        "DejaVuSerif-Italic.ttf",
        "STIXGeneral.ttf",
        "STIXGeneralBol.ttf",
        "STIXGeneralItalic.ttf",
        "cmr10.ttf",
        "cmb10.ttf",
    ),
}
# Letters nobody would read as a digit: no O/o (0), I/l/i/j (1), Z/z (2), S/s (5), G/b (6),
# T (7), B (8), g/q (9).
LETTERS = "ACEFHKMNPRUVWXYacdefhkmnprtuvwxy"
SYMBOLS = "+=%#@&*$€×÷<>~^?✓♥★☺♪→"
SHAPES = ("triangle", "square", "star", "heart", "arrow", "house", "smiley", "sun", "cloud")
# Real photographs shipped inside scikit-image's wheel (text and synthetic images left out).
PHOTOS = {
    Split.TRAIN: ("astronaut", "camera", "coffee", "coins", "grass", "horse", "moon", "ihc"),
    Split.TEST: (
        "chelsea",
        "rocket",
        "brick",
        "gravel",
        "clock_motion",
        "motorcycle_right",
        "retina",
        "hubble_deep_field",
    ),
}
# How glyphs reach the service: the ways of `model.uploads` that people send drawings and
# writing in.
RENDERINGS = (
    "mnist_png",
    "scanned_paper",
    "canvas_drawing",
    "phone_photo",
    "thick_marker",
    "fine_pen",
    "dark_mode_drawing",
    "thumbnail",
    "sheet_on_desk",
)

MNIST_SIDE = 28
MNIST_BOX = 20
DRAW_SIDE = 112


def _mnist_style(ink: np.ndarray) -> np.ndarray:
    """Any light-on-dark drawing as MNIST writes digits: the longer side 20 px, centred by mass
    in 28x28, uint8."""
    rows, columns = np.flatnonzero(ink.max(axis=1) > 0), np.flatnonzero(ink.max(axis=0) > 0)
    box = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    scale = MNIST_BOX / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    small = np.asarray(
        Image.fromarray(box.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    )
    canvas = np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
    total = small.clip(0).sum() or 1.0
    centre_y = (small.clip(0).sum(axis=1) * np.arange(size[1])).sum() / total
    centre_x = (small.clip(0).sum(axis=0) * np.arange(size[0])).sum() / total
    top = int(np.clip(round(MNIST_SIDE / 2 - centre_y), 0, MNIST_SIDE - size[1]))
    left = int(np.clip(round(MNIST_SIDE / 2 - centre_x), 0, MNIST_SIDE - size[0]))
    canvas[top : top + size[1], left : left + size[0]] = small
    return np.asarray(np.clip(canvas, 0, 255).round(), dtype=np.uint8)


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(matplotlib_fonts() / name), size)


def _character(text: str, fonts: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One character in a random font, slanted and turned a little, light on dark."""
    for _ in range(len(fonts)):
        font = _font(str(uploads.choose(rng, fonts)), 80)
        if font.getmask(text).getbbox():  # The font has the character.
            break
    image = Image.new("L", (DRAW_SIDE * 2, DRAW_SIDE * 2))
    ImageDraw.Draw(image).text((DRAW_SIDE, DRAW_SIDE), text, fill=255, font=font, anchor="mm")
    shear = rng.uniform(-0.25, 0.25)
    image = image.transform(
        image.size,
        Image.Transform.AFFINE,
        (1, shear, -shear * DRAW_SIDE, 0, 1, 0),
        Image.Resampling.BILINEAR,
    ).rotate(rng.uniform(-12, 12), Image.Resampling.BILINEAR)
    return _mnist_style(np.asarray(image, dtype=np.float32))


def letter(split: Split, rng: np.random.Generator) -> np.ndarray:
    return _character(str(uploads.choose(rng, LETTERS)), FONTS[split], rng)


def symbol(split: Split, rng: np.random.Generator) -> np.ndarray:
    return _character(str(uploads.choose(rng, SYMBOLS)), FONTS[split], rng)


def _wobbly(
    points: np.ndarray, rng: np.random.Generator, amount: float
) -> list[tuple[float, float]]:
    """A hand's version of a polyline: every point moved a little."""
    moved = points + rng.normal(0, amount, points.shape)
    return [(float(x), float(y)) for x, y in moved]


def _circle(centre: tuple[float, float], radius: float, count: int = 24) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, count)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)


def _shape_lines(shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The strokes of a simple drawing in a 112x112 square, as point arrays (x, y)."""
    c, r = DRAW_SIDE / 2, DRAW_SIDE * 0.38
    if shape == "triangle":
        return [np.array([[c, c - r], [c + r, c + r * 0.8], [c - r, c + r * 0.8], [c, c - r]])]
    if shape == "square":
        w = r * rng.uniform(0.6, 1.0)
        return [
            np.array([[c - r, c - w], [c + r, c - w], [c + r, c + w], [c - r, c + w]])[
                [0, 1, 2, 3, 0]
            ]
        ]
    if shape == "star":
        angles = -np.pi / 2 + np.arange(6) * 4 * np.pi / 5
        return [np.stack([c + r * np.cos(angles), c + r * np.sin(angles)], 1)]
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 40)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [np.stack([c + x * r / 17, c + y * r / 17], 1)]
    if shape == "arrow":
        return [
            np.array([[c - r, c], [c + r, c]]),
            np.array([[c + r * 0.5, c - r * 0.4], [c + r, c], [c + r * 0.5, c + r * 0.4]]),
        ]
    if shape == "house":
        return [
            np.array(
                [[c - r, c], [c, c - r], [c + r, c], [c + r, c + r], [c - r, c + r], [c - r, c]]
            ),
            np.array([[c - r, c], [c + r, c]]),
        ]
    if shape == "smiley":
        mouth = _circle((c, c), r * 0.55)[13:23]
        return [
            _circle((c, c), r),
            _circle((c - r * 0.35, c - r * 0.3), r * 0.08, 8),
            _circle((c + r * 0.35, c - r * 0.3), r * 0.08, 8),
            mouth,
        ]
    if shape == "sun":
        rays = [
            np.array(
                [
                    [c + r * 0.55 * np.cos(a), c + r * 0.55 * np.sin(a)],
                    [c + r * np.cos(a), c + r * np.sin(a)],
                ]
            )
            for a in np.arange(8) * np.pi / 4
        ]
        return [_circle((c, c), r * 0.4), *rays]
    # A cloud: a row of bumps.
    bumps = [
        _circle((c + dx * r, c + dy * r), radius * r, 16)
        for dx, dy, radius in ((-0.5, 0.1, 0.4), (0.0, -0.15, 0.5), (0.5, 0.1, 0.4))
    ]
    return [*bumps, np.array([[c - r * 0.9, c + r * 0.45], [c + r * 0.9, c + r * 0.45]])]


def _drawn(lines: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (DRAW_SIDE, DRAW_SIDE))
    draw = ImageDraw.Draw(image)
    width = int(rng.integers(3, 10))
    for line in lines:
        draw.line(_wobbly(line, rng, 1.5), fill=255, width=width, joint="curve")
    image = image.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR)
    return _mnist_style(np.asarray(image, dtype=np.float32))


def shape(split: Split, rng: np.random.Generator) -> np.ndarray:
    del split  # Shapes differ by seed alone.
    return _drawn(_shape_lines(str(uploads.choose(rng, SHAPES)), rng), rng)


def scribble(split: Split, rng: np.random.Generator) -> np.ndarray:
    """A tangle: a smooth pen path through many random points, or a zigzag hatching."""
    del split
    if rng.uniform() < 0.3:
        rows = int(rng.integers(5, 10))
        y = np.linspace(15, DRAW_SIDE - 15, rows)
        x = np.where(np.arange(rows) % 2 == 0, 15, DRAW_SIDE - 15) + rng.normal(0, 5, rows)
        return _drawn([np.stack([x, y], 1)], rng)
    anchors = rng.uniform(10, DRAW_SIDE - 10, (int(rng.integers(7, 14)), 2))
    steps = np.linspace(0, 1, 8)[:, np.newaxis, np.newaxis]
    middles = (anchors[:-1] + anchors[1:]) / 2
    # Quadratic curves between the middles of consecutive segments: a smooth hand movement.
    curve = (
        (1 - steps) ** 2 * middles[:-1]
        + 2 * (1 - steps) * steps * anchors[1:-1]
        + steps**2 * middles[1:]
    )
    return _drawn([curve.transpose(1, 0, 2).reshape(-1, 2)], rng)


def several_digits(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two or three of the MNIST digits `images` written side by side, one 34-px-high array."""
    count = 2 if rng.uniform() < 0.7 else 3
    crops = []
    for digit in images[:count]:
        columns = np.flatnonzero(digit.max(axis=0) > 0)
        crops.append(digit[:, columns[0] : columns[-1] + 1])
    gap = int(rng.integers(0, 7))
    width = sum(crop.shape[1] for crop in crops) + gap * (count - 1) + 8
    number = np.zeros((MNIST_SIDE + 6, width), dtype=np.uint8)
    left = 4
    for crop in crops:
        top = int(rng.integers(0, 7))
        number[top : top + MNIST_SIDE, left : left + crop.shape[1]] = np.maximum(
            number[top : top + MNIST_SIDE, left : left + crop.shape[1]], crop
        )
        left += crop.shape[1] + gap
    return number


@cache
def _photo(name: str) -> Image.Image:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    path = next(folder.glob(f"{name}.*"))
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def photo(split: Split, rng: np.random.Generator) -> tuple[bytes, str]:
    """A crop of a real photograph, resized as a phone or a web page would, JPEG or PNG."""
    source = _photo(str(uploads.choose(rng, PHOTOS[split])))
    width, height = source.size
    side = rng.uniform(0.3, 1.0)
    crop_w, crop_h = int(width * side), int(height * side * rng.uniform(0.7, 1.3))
    crop_h = min(crop_h, height)
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = source.crop((left, top, left + crop_w, top + crop_h))
    scale = rng.uniform(60, 900) / max(image.size)
    image = image.resize(
        (max(8, round(image.width * scale)), max(8, round(image.height * scale))),
        Image.Resampling.LANCZOS,
    )
    if rng.uniform() < 0.3:
        image = image.convert("L")
    if rng.uniform() < 0.7:
        return uploads.encode(image, "JPEG", quality=int(rng.integers(70, 95))), "jpg"
    return uploads.encode(image, "PNG"), "png"


GLYPH_KINDS = {"letter": letter, "symbol": symbol, "shape": shape, "scribble": scribble}
KINDS = (*GLYPH_KINDS, "photo", SEVERAL_DIGITS)


def _stream(kind: str, index: int, split: Split, seed: int) -> list[int]:
    return [seed, list(Split).index(split), KINDS.index(kind), index]


def render(
    kind: str, index: int, split: Split, seed: int, digits: np.ndarray | None = None
) -> NonDigit:
    """Upload number `index` of a kind: the same bytes for the same arguments. A number is
    written with the first two or three of `digits`."""
    rng = np.random.default_rng(_stream(kind, index, split, seed))
    if kind == "photo":
        data, extension = photo(split, rng)
        return NonDigit(kind, index, NOT_A_DIGIT, "photo", data, extension)
    if kind == SEVERAL_DIGITS:
        if digits is None:
            raise ValueError("several_digits needs MNIST digits to write")
        glyph = several_digits(digits, rng)
    else:
        glyph = GLYPH_KINDS[kind](split, rng)
    rendering = str(uploads.choose(rng, RENDERINGS))
    data, extension = uploads.CATEGORIES[rendering](glyph, rng)
    reason = SEVERAL_DIGITS if kind == SEVERAL_DIGITS else NOT_A_DIGIT
    return NonDigit(kind, index, reason, rendering, data, extension)


def generate(
    per_kind: int,
    split: Split,
    *,
    digits: np.ndarray,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    workers: int = 1,
) -> Iterator[NonDigit]:
    """`per_kind` uploads of every kind, in a fixed order. `digits` are MNIST images to write
    numbers with: training digits for the train split, test digits for the test split."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; have {list(KINDS)}")
    jobs = [
        (kind, index, split, seed, _digits_for(kind, index, split, seed, digits))
        for kind in kinds
        for index in range(per_kind)
    ]
    if workers <= 1:
        yield from (render(*job) for job in jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(render, *zip(*jobs, strict=True), chunksize=16)


def _digits_for(
    kind: str, index: int, split: Split, seed: int, digits: np.ndarray
) -> np.ndarray | None:
    """The three digits a number may be written with (only they travel to a worker)."""
    if kind != SEVERAL_DIGITS:
        return None
    rng = np.random.default_rng([*_stream(kind, index, split, seed), 1])
    return digits[rng.choice(len(digits), 3, replace=False)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write uploads that are not one digit.")
    parser.add_argument("--data", type=Path, required=True, help="MNIST .npz (digits to write)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-kind", type=int, default=20)
    parser.add_argument("--split", choices=list(Split), default=Split.TEST)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with np.load(args.data) as data:
        digits = data["x_test" if args.split == Split.TEST else "x_train"]
    made = generate(args.per_kind, Split(args.split), digits=digits, seed=args.seed)
    count = uploads.write_files(((u.kind, u.filename, u.data) for u in made), args.out)
    print(f"Wrote {count} uploads to {args.out}")


if __name__ == "__main__":
    main()
