from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from app import preprocess as preprocess_module
from app.decoding import open_image
from app.errors import BlankImageError, ImageTooLargeError, InvalidImageError
from app.model_format import INPUT_SIDE, PreprocessingProfile
from app.preprocess import Preprocessed, preprocess, preprocess_image
from model.uploads import (
    CATEGORIES,
    INK_COLOURS,
    inked,
    lighting,
    natural_glyph,
    paper,
    pen_glyph,
    to_image,
)
from tests.conftest import FIXTURES
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
    assert image.image.size == (3000, 3000)
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


def test_an_mnist_digit_reaching_the_edge_of_its_frame_reaches_the_model_as_it_is(digits):
    images = digits[0]
    # Test digit 1449, a 9: MNIST centred it by mass, and its ink reaches the bottom two rows
    # (the whole of preprocessing would have stretched its ink by up to two gray levels).
    reaching_the_edge = images[39]
    assert reaching_the_edge[-2:].any()
    np.testing.assert_array_equal(preprocess(png(reaching_the_edge)), reaching_the_edge)


def page(
    mask: np.ndarray, *, brightness: float = 240, light: float = 0.0, seed: int = 0
) -> Image.Image:
    """Dark ink where `mask` is, on grainy paper, optionally under uneven light."""
    rng = np.random.default_rng(seed)
    sheet = paper(mask.shape, rng, brightness=brightness, tint=(1, 1, 1), grain=3)
    scene = inked(sheet, mask, INK_COLOURS["black"], 0.9)
    if light:
        scene = scene * lighting(mask.shape, rng, light)[..., np.newaxis]
    return to_image(scene)


def on_page(glyph: np.ndarray, size: tuple[int, int], top: int, left: int) -> np.ndarray:
    mask = np.zeros(size, dtype=np.float32)
    mask[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return mask


def assert_crop_inside(crop_box: tuple[float, ...], bounds: tuple[float, ...]) -> None:
    """The crop box lies strictly inside `bounds` (left, top, right, bottom)."""
    left, top, right, bottom = crop_box
    bound_left, bound_top, bound_right, bound_bottom = bounds
    assert left > bound_left
    assert top > bound_top
    assert right < bound_right
    assert bottom < bound_bottom


def ink_box(pixels: np.ndarray) -> tuple[int, int]:
    rows, columns = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


def test_a_small_off_centre_digit_on_a_large_page_fills_the_box(digit, reference):
    glyph = natural_glyph(digit, 150)  # A quarter of the page's height.
    mask = on_page(glyph, (600, 800), top=400, left=60)
    data = encode(page(mask), "JPEG", quality=60)
    result = preprocess_image(open_image(data), PreprocessingProfile.MNIST)
    assert max(ink_box(result.pixels)) >= 19  # MNIST's 20 px box, not a dot in the middle.
    assert similarity(result.pixels, reference) > 0.85
    left, top, right, bottom = result.crop_box
    assert abs(top - 400) < 15
    assert abs(bottom - 550) < 15
    assert abs(left - 60) < 15
    assert abs(right - (60 + glyph.shape[1])) < 15
    assert result.inverted
    assert result.scale == pytest.approx(20 / (bottom - top), rel=0.01)


def test_specks_and_smudges_away_from_the_digit_are_dropped(digit, reference):
    mask = on_page(natural_glyph(digit, 160), (400, 400), top=120, left=120)
    mask[20:26, 30:36] = 1  # Dust near a corner.
    mask[350:353, 340:370] = 0.6  # A faint pencil smudge.
    result = preprocess_image(open_image(encode(page(mask), "PNG")), "mnist")
    assert_crop_inside(result.crop_box, (100, 100, 300, 300))
    assert similarity(result.pixels, reference) > 0.9


def test_shadowed_corners_are_not_taken_for_ink(digit, reference):
    mask = on_page(natural_glyph(digit, 120), (500, 400), top=300, left=50)
    data = encode(page(mask, brightness=200, light=0.45, seed=3), "JPEG", quality=85)
    result = preprocess_image(open_image(data), "mnist")
    assert result.inverted
    assert similarity(result.pixels, reference) > 0.85


def test_a_thick_digit_filling_a_tight_crop_keeps_its_polarity(digit):
    glyph = pen_glyph(digit, 90, pen_width=14)
    result = preprocess_image(open_image(encode(page(on_page(glyph, (100, 90), 5, 5)))), "mnist")
    assert result.inverted


def test_a_fine_pen_on_a_large_page_is_looked_at_in_detail(digit, reference):
    glyph = pen_glyph(digit, 220, pen_width=1.5)
    mask = on_page(glyph, (700, 800), top=380, left=500)
    result = preprocess(encode(page(mask), "JPEG", quality=90))
    assert similarity(result, reference) > 0.75
    assert result.max() > 200  # Strokes at full strength, not faint.
    assert max(ink_box(result)) >= 19


def test_a_hairline_stroke_past_the_first_close_look_is_followed_to_its_end():
    """A 9 whose head is drawn firmly and whose long tail is a hairline: the shrunk page shows
    only the head, and the tail leads past the part of the page first looked at again."""
    sheet = Image.new("L", (600, 600), 245)
    draw = ImageDraw.Draw(sheet)
    draw.ellipse([250, 60, 350, 160], outline=20, width=3)
    draw.line([350, 110, 352, 460], fill=20, width=1)
    result = preprocess_image(open_image(encode(sheet, "PNG")), "mnist")
    _, top, _, bottom = result.crop_box
    assert abs(top - 60) < 3
    assert abs(bottom - 461) < 3


def test_the_bar_of_a_5_written_well_above_its_body_is_kept():
    """Written with a fine pen, a 5's bar and body are two strokes with a gap half the body's
    height between them: too far to be joined as a speck would be, but too much ink to be one."""
    sheet = Image.new("L", (600, 600), 245)
    draw = ImageDraw.Draw(sheet)
    draw.line([290, 170, 400, 170], fill=20, width=2)  # The bar.
    draw.line([290, 240, 285, 300], fill=20, width=2)  # The body: a stem and a bowl.
    draw.arc([270, 260, 410, 380], start=-150, end=140, fill=20, width=2)
    result = preprocess_image(open_image(encode(sheet, "PNG")), "mnist")
    _, top, _, bottom = result.crop_box
    assert abs(top - 169) < 3
    assert abs(bottom - 380) < 3


def test_the_lines_of_squared_paper_are_not_ink(digit, reference):
    """Faint grid lines run through and past the digit; strokes grown into faint pixels must
    not follow them out, nor keep the pieces between its strokes."""
    mask = on_page(natural_glyph(digit, 240), (600, 800), top=180, left=280)
    grid = np.zeros(mask.shape, dtype=np.float32)
    for offset in range(4):  # Lines 4 px wide, every 30 px.
        grid[5 + offset :: 30] = grid[:, 12 + offset :: 30] = 1
    rng = np.random.default_rng(0)
    sheet = paper(mask.shape, rng, brightness=245, tint=(1, 1, 1), grain=2)
    lined = inked(sheet, grid, (120, 160, 215), 0.7)
    result = preprocess_image(
        open_image(encode(to_image(inked(lined, mask, INK_COLOURS["black"], 0.9)), "PNG")),
        "mnist",
    )
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ink_box = (columns[0], rows[0], columns[-1] + 1, rows[-1] + 1)
    assert np.abs(np.subtract(result.crop_box, ink_box)).max() < 6
    assert similarity(result.pixels, reference) > 0.85


def preprocessed_photo(fixture: str) -> tuple[Preprocessed, float, float]:
    """A fixture photo preprocessed, with its crop box's width and height as shares of the
    photo's."""
    data = (FIXTURES / fixture).read_bytes()
    found = preprocess_image(open_image(data), "mnist")
    width, height = Image.open(io.BytesIO(data)).size
    left, top, right, bottom = found.crop_box
    return found, (right - left) / width, (bottom - top) / height


def test_a_large_digit_running_off_a_page_is_not_taken_for_a_sheet_on_a_desk():
    """Its strokes along the border look like a desk, and they split the page: painting out
    everything past the largest piece of paper would paint out most of the digit."""
    _, width_share, height_share = preprocessed_photo("large_digit_off_page.jpg")
    assert width_share > 0.6
    assert height_share > 0.4


def test_a_sheet_with_only_a_thin_strip_of_desk_showing_is_found():
    """The desk shows as a strip a pixel or two wide at the working size, along two edges:
    taken for part of the page, it tilted the lighting fit until the paper looked darker than
    the ink, and the whole photo was cropped instead of the digit."""
    found, width_share, height_share = preprocessed_photo("thin_desk_strip.jpg")
    assert found.inverted
    assert width_share < 0.2
    assert height_share < 0.25


def test_a_stroke_wider_than_the_shading_window_stays_solid():
    """Inside a very thick stroke no edge lies within the window the paper's shading is read
    over, so its inside was evened out like paper in a shadow, and the 1 reached the model
    hollow (read as a 0 or an 8). What edges ring inside the sheet is not paper."""
    found, _, _ = preprocessed_photo("thick_stroke_on_a_sheet.jpg")
    assert found.inverted
    ink = found.pixels > 127
    holes = ndimage.binary_fill_holes(ink) & ~ink
    assert holes.sum() == 0
    assert ink.sum() > 100


def test_a_desk_past_two_edges_does_not_turn_the_page_into_ink():
    """The lighting fit that tells which side is ink sampled every few pixels from the top left
    and never saw the bottom row or the right column: fitted to the top and left sides only, a
    dark desk past the top edge tilted it, the page looked lighter than its background, and the
    whole photo was cropped as a light digit."""
    found, width_share, height_share = preprocessed_photo("desk_past_two_edges.jpg")
    assert found.inverted
    assert width_share < 0.4
    assert height_share < 0.4


def test_a_sheet_whose_edge_fades_out_for_a_few_pixels_is_found():
    """Where the sheet's edge against the desk fades out, the paper and the desk were one
    region, the sheet was not found, and the crop ran from the desk's edge across the photo.
    Bridging gaps of a few pixels in the edges separates them."""
    found, width_share, height_share = preprocessed_photo("gap_in_the_sheets_edge.jpg")
    assert found.inverted
    assert width_share < 0.2
    assert height_share < 0.2


def test_bridged_gaps_between_strokes_do_not_make_a_sheet():
    """Bridging the gaps between the strokes of a large digit running into the photo's edges
    makes them look like a desk around a sheet; the sheet so found cut off the digit. Bridges
    must close a sheet's outline, not lie inside it."""
    found, width_share, _ = preprocessed_photo("large_digit_touching_the_border.jpg")
    assert found.inverted
    assert width_share > 0.9


def test_bridged_strokes_do_not_wall_off_a_blank_sheet():
    """Bridged to the photo's sides, the top bar of a large 5 under a strong vignette walled off
    the bright top of the photo, which looked like a sheet with the bar as the desk's edge; the
    sheet so found had nothing on it, and the crop took a sliver of the bar. Past the width of a
    stroke, the background is as light as the "paper" again; a desk stays darker."""
    found, width_share, height_share = preprocessed_photo("large_digit_walling_off_a_corner.jpg")
    assert found.inverted
    assert width_share > 0.9
    assert height_share > 0.3


def test_thick_light_strokes_on_a_dark_canvas_are_not_a_bridged_sheet():
    """Bridging the gaps between the edges of thick light strokes on a dark canvas leaves a
    piece of the strokes, the lower loop of an 8 closed, as a bright region walled off from the
    canvas: taken for a sheet, it was cropped as the page the digit is on."""
    found, _, height_share = preprocessed_photo("thick_light_strokes_on_a_dark_canvas.png")
    assert not found.inverted
    assert height_share > 0.6


def test_a_page_on_a_desk_nearly_as_light_is_read_as_dark_ink(digit, reference):
    """A white page on a light grey desk under uneven light: no step strong enough to find the
    sheet by, and the page, brighter than the desk over a large area, outweighs the digit in
    judging which side is ink: nothing was found, and the answer was blank_image. Read the
    other way round, the digit shows, clear of the image's edges."""
    sheet = np.asarray(page(on_page(natural_glyph(digit, 110), (300, 240), 95, 70), brightness=235))
    height, width = 500, 600
    flat = np.float32([[0, 0], [240, 0], [240, 300], [0, 300]])
    corners = np.float32([[150, 90], [420, 100], [410, 440], [140, 430]])
    warp = cv2.getPerspectiveTransform(flat, corners)
    scene = cv2.warpPerspective(sheet, warp, (width, height), borderValue=(220, 220, 215))
    scene = scene * lighting((height, width), np.random.default_rng(1), 0.15)[..., np.newaxis]
    scene = scene + np.random.default_rng(0).normal(0, 3, scene.shape)
    result = preprocess_image(open_image(encode(to_image(scene), "JPEG", quality=85)), "mnist")
    assert result.inverted
    assert_crop_inside(result.crop_box, (200, 170, 300, 360))
    assert similarity(result.pixels, reference) > 0.85


AROUND = [[150, 90], [420, 100], [410, 440], [140, 430]]
STRIP_ON_THE_LEFT = [[110, -60], [700, -60], [700, 560], [100, 560]]


@pytest.mark.parametrize(
    ("corners", "light"),
    [(AROUND, 0.0), (AROUND, 0.15), (STRIP_ON_THE_LEFT, 0.15)],
    ids=["desk all around", "uneven light", "a strip of desk"],
)
def test_a_sheet_darker_than_the_desk_is_found(digit, reference, corners, light):
    """Grey or brown paper on a white table: the desk is the lighter side. Without the sheet
    found, its outline is taken for the digit's strokes; a strip of the desk along one edge is
    light and edge-free, like paper, but has nothing written on it."""
    glyph = natural_glyph(digit, 110)
    sheet = np.asarray(page(on_page(glyph, (300, 240), 95, 70), brightness=150))
    height, width = 500, 600
    flat = np.float32([[0, 0], [240, 0], [240, 300], [0, 300]])
    warp = cv2.getPerspectiveTransform(flat, np.float32(corners))
    scene = cv2.warpPerspective(sheet, warp, (width, height), borderValue=(238, 238, 235))
    scene = scene * lighting((height, width), np.random.default_rng(1), light)[..., np.newaxis]
    scene = scene + np.random.default_rng(0).normal(0, 3, scene.shape)
    result = preprocess_image(open_image(encode(to_image(scene), "JPEG", quality=85)), "mnist")
    # Where the glyph's box on the page lands in the photo, and a few pixels around it.
    glyph_height, glyph_width = glyph.shape
    box = [
        [70, 95],
        [70 + glyph_width, 95],
        [70, 95 + glyph_height],
        [70 + glyph_width, 95 + glyph_height],
    ]
    landed = cv2.perspectiveTransform(np.float32([box]), warp)[0]
    left, top = landed.min(axis=0) - 5
    right, bottom = landed.max(axis=0) + 5
    assert_crop_inside(result.crop_box, (left, top, right, bottom))
    assert similarity(result.pixels, reference) > 0.85


def test_pencil_on_a_dark_sheet_counts_as_written_on():
    """Pencil on paper at about 100 gray levels is less than 20 levels darker than the paper,
    though as dark for its paper as pencil on white is: with a fixed step for ink, the sheet
    counted as unwritten and was not taken, and the whole photo was cropped."""
    found, width_share, height_share = preprocessed_photo("darker_sheet_pencil.jpg")
    assert found.inverted
    assert width_share < 0.4
    assert height_share < 0.4


def test_a_dark_desk_past_a_blank_sheet_is_not_a_darker_sheet():
    """A blank white sheet on a dark desk, a corner of the desk in a shadow: the desk strip,
    read the other way round, is a sheet with something darker on it, and taken for one it
    painted out the white sheet and its shadow was read as a digit. A darker sheet is the larger
    of the two, as a white desk around grey paper is."""
    with pytest.raises(BlankImageError):
        preprocess((FIXTURES / "blank_sheet_dark_desk.jpg").read_bytes())


def test_the_loop_of_a_digit_drawn_with_a_fine_pen_is_not_a_darker_sheet(digits):
    """In the negative, the inside of a large loop drawn with a fine pen is a region ringed by
    an edge, like a darker sheet on a white desk, but it is as light as the paper outside:
    taken for a sheet, everything outside it was painted out and a piece of the 8 was read."""
    images, _ = digits
    eight = images[19]
    data, _ = CATEGORIES["fine_pen"](eight, np.random.default_rng(9))
    assert similarity(preprocess(data), preprocess(png(eight))) > 0.7


def test_a_small_sheet_in_the_middle_of_a_desk_is_found(digit, reference):
    """Photographed from further away, the sheet covers a fifth of the photo: still a sheet,
    and the digit on it is read, not the sheet's outline."""
    sheet = np.asarray(page(on_page(natural_glyph(digit, 110), (300, 240), 95, 70)))
    height, width = 700, 900
    flat = np.float32([[0, 0], [240, 0], [240, 300], [0, 300]])
    corners = np.float32([[300, 170], [620, 185], [605, 540], [290, 525]])
    warp = cv2.getPerspectiveTransform(flat, corners)
    scene = cv2.warpPerspective(sheet, warp, (width, height), borderValue=(80, 95, 130))
    scene = scene + np.random.default_rng(0).normal(0, 3, scene.shape)
    result = preprocess_image(open_image(encode(to_image(scene), "JPEG", quality=85)), "mnist")
    assert_crop_inside(result.crop_box, (290, 170, 620, 540))
    assert similarity(result.pixels, reference) > 0.85


def test_a_dim_16_bit_scan_with_dead_and_hot_pixels_is_read_like_any_other(digit, reference):
    """Scanners and sensors write 16-bit grayscale that spans a fraction of the range, and a
    dead or a stuck pixel at either extreme must not squash the digit into the noise."""
    gray = np.asarray(page(on_page(natural_glyph(digit, 150), (600, 800), 300, 400)).convert("L"))
    sixteen_bit = (30000 + gray.astype(np.float64) / 255 * 6000).astype(np.uint16)
    sixteen_bit[5, 5], sixteen_bit[-3, -7] = 65535, 0
    image = Image.fromarray(sixteen_bit)
    assert image.mode == "I;16"
    assert similarity(preprocess(encode(image, "PNG")), reference) > 0.85


def test_mnist_digits_are_reported_as_taken_as_they_are(digit):
    result = preprocess_image(open_image(png(digit)), "mnist")
    assert not result.inverted
    assert result.crop_box == (0, 0, 28, 28)
    assert result.scale == 1


def test_a_digit_in_the_shadow_across_a_sheet_is_found():
    """A shadow with a sharp edge across a sheet on a keyboard (test digit 3920, a 7, lies in
    it): the edge split the paper, the sheet was taken to be the lit part alone, and the digit,
    outside it, was painted over (`blank_image`). Paper in the shadow is part of the sheet."""
    found, width_share, height_share = preprocessed_photo("sheet_in_a_sharp_shadow.jpg")
    assert found.inverted
    assert width_share < 0.2
    assert height_share < 0.3
    # The shadow's edge runs at about 260 of the photo's 426 rows.
    assert found.crop_box[1] > 250
