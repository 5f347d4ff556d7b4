from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app import preprocess as preprocess_module
from app.errors import BlankImageError, ImageTooLargeError, InvalidImageError
from app.model_format import INPUT_SIDE, PreprocessingProfile
from app.preprocess import open_image, preprocess
from tests.imaging import canvas_drawing, encode, paper_photo, png, similarity

FORMATS = [
    ("PNG", {}),
    ("JPEG", {"quality": 85}),
    ("GIF", {}),
    ("BMP", {}),
    ("WEBP", {"quality": 90}),
    ("TIFF", {}),
]


@pytest.fixture
def digit(digits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return digits[0][0]


@pytest.fixture
def reference(digit: np.ndarray) -> np.ndarray:
    return preprocess(png(digit))


def large_dark_on_light(digit: np.ndarray, side: int = 140) -> Image.Image:
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    return Image.fromarray(255 - np.asarray(big))


def test_mnist_digits_pass_through_essentially_unchanged(digits: tuple[np.ndarray, np.ndarray]):
    images, _ = digits
    differences = [np.abs(preprocess(png(image)) - image).mean() for image in images]
    assert max(differences) < 1.0
    assert float(np.mean(differences)) < 0.3


def test_output_is_float32_28x28_in_pixel_range(reference: np.ndarray):
    assert reference.shape == (INPUT_SIDE, INPUT_SIDE)
    assert reference.dtype == np.float32
    assert reference.min() >= 0
    assert reference.max() == pytest.approx(255, abs=1)


@pytest.mark.parametrize(("image_format", "options"), FORMATS)
def test_every_format_gives_the_same_digit(digit, reference, image_format, options):
    data = encode(large_dark_on_light(digit).convert("RGB"), image_format, **options)
    assert similarity(preprocess(data), reference) > 0.9


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_mode_gives_the_same_digit(digit, reference, mode):
    image = large_dark_on_light(digit)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(image).astype(np.float32) / 255)
    else:
        image = image.convert(mode)
    image_format = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    assert similarity(preprocess(encode(image, image_format)), reference) > 0.85


def test_light_and_dark_backgrounds_give_the_same_result(digit):
    light_on_dark = Image.fromarray(255 - np.asarray(large_dark_on_light(digit)))
    dark_on_light = large_dark_on_light(digit)
    assert similarity(preprocess(encode(light_on_dark)), preprocess(encode(dark_on_light))) > 0.99


@pytest.mark.parametrize(("orientation", "stored_rotation"), [(3, 180), (6, 90), (8, 270)])
def test_exif_orientation_is_applied(digit, reference, orientation, stored_rotation):
    # A camera stores the sensor's pixels rotated and says so in the EXIF orientation tag.
    stored = large_dark_on_light(digit).rotate(stored_rotation, expand=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored.convert("RGB"), "JPEG", quality=90, exif=exif)
    assert similarity(preprocess(data), reference) > 0.9


def test_canvas_drawing_dark_strokes_on_transparent_background(digit, reference):
    assert similarity(preprocess(encode(canvas_drawing(digit))), reference) > 0.9


def test_light_strokes_on_transparent_background(digit, reference):
    drawing = np.asarray(canvas_drawing(digit)).copy()
    drawing[..., :3] = 255
    assert similarity(preprocess(encode(Image.fromarray(drawing))), reference) > 0.9


def test_palette_image_with_transparency(digit, reference):
    drawing = canvas_drawing(digit).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    mask = np.asarray(canvas_drawing(digit))[..., 3] < 128
    indices = np.asarray(drawing).copy()
    transparent_index = 15
    indices[mask] = transparent_index
    drawing = Image.fromarray(indices, mode=None)
    drawing.putpalette([0, 0, 0] * 15 + [255, 255, 255])
    data = encode(drawing, "PNG", transparency=transparent_index)
    assert similarity(preprocess(data), reference) > 0.85


def test_photo_of_paper_has_a_clean_background(digit, reference):
    data = encode(paper_photo(digit), "JPEG", quality=70)
    result = preprocess(data)
    assert similarity(result, reference) > 0.85
    background = reference == 0
    # Paper texture, the lighting gradient and JPEG noise are gone, not faintly left behind.
    assert np.mean(result[background] < 20) > 0.97


def test_gif_uses_the_first_frame(digits):
    first, second = digits[0][0], digits[0][1]
    frames = [Image.fromarray(first).convert("P"), Image.fromarray(second).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    result = preprocess(buffer.getvalue())
    assert similarity(result, preprocess(png(first))) > 0.95


def test_large_jpeg_is_decoded_at_reduced_size(digit, reference):
    photo = paper_photo(digit, side=3000).convert("RGB")
    data = encode(photo, "JPEG", quality=80)
    image = open_image(data)
    assert image.size == (3000, 3000)
    assert similarity(preprocess(data), reference) > 0.85


def test_thin_pen_strokes_are_thickened(digit, reference):
    # A fine pen on a large sheet: strokes about 1/100 of the digit's height.
    big = np.asarray(Image.fromarray(digit).resize((600, 600), Image.Resampling.BICUBIC))
    thin = big > 200
    result = preprocess(encode(Image.fromarray(np.where(thin, 0, 255).astype(np.uint8))))
    assert similarity(result, reference) > 0.8
    assert result.max() > 200


def test_fit_profile_letterboxes(digit):
    wide = np.zeros((28, 56), dtype=np.uint8)
    wide[:, :28] = digit
    result = preprocess(png(wide), PreprocessingProfile.FIT)
    assert result.shape == (28, 28)
    assert np.all(result[:7] == 0)
    assert np.all(result[21:] == 0)
    assert similarity(result[7:21, :14], np.asarray(Image.fromarray(digit).resize((14, 14)))) > 0.9


def test_fit_profile_keeps_a_uniform_image():
    assert np.all(preprocess(png(np.full((28, 28), 50, np.uint8)), "fit") == 50)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"%PDF-1.4 hello"],
    ids=["empty", "text", "png-header-only", "pdf"],
)
def test_undecodable_bytes_are_invalid(data):
    with pytest.raises(InvalidImageError):
        preprocess(data)


def test_truncated_image_is_invalid(digit):
    data = encode(large_dark_on_light(digit), "PNG")
    with pytest.raises(InvalidImageError):
        preprocess(data[: len(data) // 2])


def test_pixel_bomb_is_refused_before_decoding():
    # 20000 x 20000 of one colour compresses to a few hundred kilobytes.
    huge = Image.new("1", (20000, 20000))
    data = encode(huge, "PNG", optimize=False)
    assert len(data) < 2_000_000
    with pytest.raises(ImageTooLargeError):
        preprocess(data, max_pixels=50_000_000)


def test_pixel_limit_is_configurable(digit):
    with pytest.raises(ImageTooLargeError):
        preprocess(png(digit), max_pixels=28 * 28 - 1)


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_image_is_refused(value):
    with pytest.raises(BlankImageError):
        preprocess(png(np.full((40, 40), value, np.uint8)))


def test_fully_transparent_image_is_blank():
    with pytest.raises(BlankImageError):
        preprocess(encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0))))


def test_noise_only_image_is_blank():
    noise = np.random.default_rng(0).normal(200, 4, (64, 64))
    with pytest.raises(BlankImageError):
        preprocess(png(np.clip(noise, 0, 255).astype(np.uint8)))


def test_mnist_format_shortcut_gives_what_the_full_pipeline_gives(digits, monkeypatch):
    images = digits[0][:100]
    shortcut = [preprocess(png(image)) for image in images]
    monkeypatch.setattr(preprocess_module, "_already_like_mnist", lambda gray: False)
    full = [preprocess(png(image)) for image in images]
    for fast, slow in zip(shortcut, full, strict=True):
        assert np.abs(fast - slow).mean() < 1.0
