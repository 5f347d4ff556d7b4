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

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np
from PIL import Image

from app.decoding import DEFAULT_MAX_PIXELS, Decoded, Grayscale, ImageBox, OpenedImage, open_image
from app.errors import BlankImageError
from app.model_format import INPUT_SIDE, PreprocessingProfile

MNIST_BOX_SIDE = 20
# The thinnest stroke, in pixels of the final 20 px box, that MNIST digits have. Thinner strokes
# (a fine pen photographed large) are thickened before scaling so they do not fade away.
MIN_STROKE_WIDTH = 1.8
# Less contrast than this (gray levels) between ink and background is no ink at all.
MIN_INK_CONTRAST = 12
# A glyph found smaller than this (pixels, longer side), or with strokes thinner than this
# (pixels), in the working image is looked at again alone, when the upload has the resolution:
# the fine strokes of a small digit on a large page are fainter than the noise once the whole
# page is shrunk. It is looked at with at least DETAIL_SIDE pixels on its longer side and
# DETAIL_MIN_STROKE pixels of stroke width, up to DETAIL_MAX_SIDE.
DETAIL_MIN_SIDE = 30
DETAIL_MIN_STROKE = 2.0
DETAIL_SIDE = 64
DETAIL_MAX_SIDE = 160
# Around a glyph looked at again: room for the background fit and for strokes first missed.
DETAIL_MARGIN = 0.5
# Looks at most, when strokes found lead past the part of the image looked at.
DETAIL_LOOKS = 3


@dataclass(frozen=True, slots=True)
class Preprocessed:
    """The model input and what it took to make it."""

    pixels: np.ndarray  # float32 (28, 28) in [0, 255], light ink on dark.
    inverted: bool  # Dark ink on a light background was turned light on dark.
    crop_box: ImageBox  # The glyph in the upright image (pixels; left, top, right, bottom).
    scale: float  # Model-input pixels per image pixel.


def preprocess(
    data: bytes,
    profile: PreprocessingProfile | str = PreprocessingProfile.MNIST,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode `data` and return a float32 (28, 28) array in [0, 255], light ink on dark."""
    return preprocess_image(open_image(data, max_pixels=max_pixels), profile).pixels


def preprocess_image(opened: OpenedImage, profile: PreprocessingProfile | str) -> Preprocessed:
    decoded = Decoded(opened)
    if PreprocessingProfile(profile) is PreprocessingProfile.MNIST:
        return _centre_like_mnist(decoded)
    width, height = decoded.upright_size
    return Preprocessed(
        _letterbox(decoded.working.pixels),
        inverted=False,
        crop_box=(0.0, 0.0, float(width), float(height)),
        scale=INPUT_SIDE / max(width, height),
    )


def _centre_like_mnist(decoded: Decoded) -> Preprocessed:
    working = decoded.working
    if _already_like_mnist(working.pixels):
        return Preprocessed(working.pixels, False, (0.0, 0.0, 28.0, 28.0), 1.0)
    edge_free = EdgeFreeRegions(working.pixels)
    sheet = _find_sheet(working, edge_free)
    if sheet is None or not _written_on(sheet, working):
        # Past a darker sheet, a white desk is the light region with an edge around it, but
        # nothing is written on it, and it is the smaller (while past a blank white sheet, a
        # dark desk in a shadow can look written on).
        darker = _find_darker_sheet(working, edge_free)
        if darker is not None and (sheet is None or darker.area > sheet.area):
            sheet = darker
    if sheet is not None:
        working = sheet.painted(working, edge_free)
    # Ink on a sheet of paper is darker than the paper.
    inverted = sheet is not None or _dark_on_light(working.pixels)
    found = _find_glyph(working, inverted)
    if sheet is None and found is None:
        # Nothing on the side taken for ink: the background may have been misjudged (a page on
        # a desk as light as itself, the sheet not found). What the other side shows in a blank
        # photo is the desk or the page's edge, running off the image; a digit lies clear of it.
        other = _find_glyph(working, not inverted)
        if other is not None and _clear_of_edges(other[1], decoded.upright_size, working.scale):
            found, inverted = other, not inverted
    if found is None:
        raise BlankImageError("The image is blank: there is nothing to classify.")
    glyph, box = found
    stroke_width = _stroke_width(glyph)
    if max(glyph.shape) < DETAIL_MIN_SIDE or stroke_width < DETAIL_MIN_STROKE:
        closer = _look_closer(decoded, (glyph, box), stroke_width, inverted, sheet)
        if closer[0] is not glyph:
            (glyph, box), stroke_width = closer, _stroke_width(closer[0])
    left, top, right, bottom = box
    return Preprocessed(
        _place_by_centre_of_mass(_scale_into_box(glyph, MNIST_BOX_SIDE, stroke_width)),
        inverted,
        box,
        MNIST_BOX_SIDE / max(right - left, bottom - top),
    )


def _look_closer(
    decoded: Decoded,
    found: tuple[np.ndarray, ImageBox],
    stroke_width: float,
    inverted: bool,
    sheet: Sheet | None,
) -> tuple[np.ndarray, ImageBox]:
    """The glyph found again in its part of the image, at a resolution that shows its strokes
    (on a sheet on a desk, without the desk where the part reaches past the sheet's edge)."""
    width, height = decoded.upright_size
    # Ink mass survives shrinking, so the working image's stroke width, over its scale, is the
    # width on the page.
    stroke_scale = decoded.working.scale * DETAIL_MIN_STROKE / max(stroke_width, 0.1)
    for _ in range(DETAIL_LOOKS):
        left, top, right, bottom = found[1]
        side = max(right - left, bottom - top)
        margin = DETAIL_MARGIN * side
        wanted = (left - margin, top - margin, right + margin, bottom + margin)
        scale = max(DETAIL_SIDE / side, stroke_scale)
        region = decoded.region(wanted, min(scale, DETAIL_MAX_SIDE / side))
        if region is not None and sheet is not None:
            region = sheet.painted(region, EdgeFreeRegions(region.pixels))
        closer = None if region is None else _find_glyph(region, inverted)
        if region is None or closer is None:
            return found
        found = closer
        # Strokes the working image was too coarse to show can lead past the region's edge:
        # then look again around all that was found.
        if not _runs_off(found[1], region, (width, height)):
            break
    return found


def _clear_of_edges(box: ImageBox, image_size: tuple[int, int], scale: float) -> bool:
    """Whether `box` stays more than a pixel (of an image at `scale`) inside the image."""
    left, top, right, bottom = box
    width, height = image_size
    near = 1 / scale
    return left > near and top > near and right < width - near and bottom < height - near


def _runs_off(box: ImageBox, region: Grayscale, image_size: tuple[int, int]) -> bool:
    """Whether `box` reaches an edge of `region` that is not an edge of the image."""
    left, top, right, bottom = box
    rows, columns = region.pixels.shape
    shown_left, shown_top, shown_right, shown_bottom = region.image_box(
        slice(0, rows), slice(0, columns)
    )
    width, height = image_size
    near = 1.5 / region.scale  # Image pixels: a region pixel and a half.
    return (
        (left - shown_left < near and shown_left > 0)
        or (top - shown_top < near and shown_top > 0)
        or (shown_right - right < near and shown_right < width)
        or (shown_bottom - bottom < near and shown_bottom < height)
    )


@dataclass(frozen=True, slots=True)
class Sheet:
    """A sheet of paper lying on a desk: its outline in image pixels (x, y), the scale (pixels
    per image pixel) of the image it was found in, and the longer side of the whole image."""

    outline: np.ndarray
    found_at_scale: float
    image_side: float

    @property
    def area(self) -> float:
        """In image pixels."""
        return float(cv2.contourArea(self.outline.astype(np.float32)))

    def well_inside(self, gray: Grayscale) -> np.ndarray:
        """Where `gray` shows the sheet, less DESK_EDGE pixels (of the image it was found in)
        along its outline: the sheet's blurred edge reaches a pixel or two past the outline,
        which is itself only as exact as that image."""
        depth, edge = self._depth(gray)
        return np.asarray(depth > edge)

    def _depth(self, gray: Grayscale) -> tuple[np.ndarray, float]:
        """(How far inside the outline each pixel of `gray` lies, the width of the edge band
        to leave out), in `gray`'s pixels."""
        inside = np.zeros(gray.pixels.shape, dtype=np.uint8)
        corners = (self.outline - (gray.left, gray.top)) * gray.scale
        cv2.fillConvexPoly(inside, np.rint(corners * 16).astype(np.int32), 1, shift=4)
        edge = DESK_EDGE * max(1.0, gray.scale / self.found_at_scale)
        return cv2.distanceTransform(inside, cv2.DIST_C, 3), edge

    def painted(self, gray: Grayscale, edge_free: EdgeFreeRegions) -> Grayscale:
        """`gray` as if the sheet lay flat under even light: the desk and the sheet's edge
        painted over in the paper's level, and the sheet divided by the paper's brightness
        nearby (its mean within SHADE_WINDOW of the image, less the ink and anything else with
        an edge). That takes out the soft edge of a shadow across the sheet, which the smooth
        lighting fit cannot follow and which would otherwise be taken for a stroke.
        `edge_free` holds the regions of `gray` that no edge crosses."""
        pixels = gray.pixels
        depth, edge = self._depth(gray)
        painted = depth <= edge
        paper = _paper_regions(pixels, edge_free, ~painted, depth, edge)
        if not paper.any():
            return gray
        window = max(3, round(SHADE_WINDOW * self.image_side * gray.scale)) | 1
        level = float(cv2.mean(pixels, paper.astype(np.uint8))[0])
        local = _mean_nearby(pixels, paper, window, level)
        # Ink too faint or thin to have an edge is darker than the paper around it: read again
        # without it, or it would be taken for paper and evened out with it.
        paper *= pixels >= local - INK_BELOW_PAPER
        local = _mean_nearby(pixels, paper, window, level)
        cleaned = np.where(painted, level, pixels * (level / np.maximum(local, 1.0)))
        cleaned = np.minimum(cleaned, 255).astype(np.float32)
        # Cropped to the sheet: a wide desk painted flat would outweigh the paper's grain in
        # the statistics of what is noise.
        left, top, width, height = cv2.boundingRect((~painted).view(np.uint8))
        return Grayscale(
            cleaned[top : top + height, left : left + width],
            gray.left + left / gray.scale,
            gray.top + top / gray.scale,
            gray.scale,
        )


def _paper_regions(
    pixels: np.ndarray,
    edge_free: EdgeFreeRegions,
    unpainted: np.ndarray,
    depth: np.ndarray,
    edge: float,
) -> np.ndarray:
    """Where the sheet shows paper (`unpainted`, less what lies on or beside an edge), as
    float32 0/1: the regions no edge crosses that reach near the sheet's outline (within twice
    its edge band) or out of view, and those ringed by edges inside the sheet that are about
    as light (paper in a loop of the digit). A darker one is the inside of a stroke too thick
    for an edge to lie within the shading window: evened out like paper in a shadow, the stroke
    would come out hollow. Levels are read where the sheet is not painted over."""
    count, regions, _ = edge_free.labelled
    reaching = np.zeros(count, dtype=bool)
    reaching[regions[depth <= 2 * edge]] = True
    reaching[_border(regions)] = True
    reaching[0] = False  # Edges.
    shown = regions[unpainted]
    areas = np.bincount(shown, minlength=count)
    sums = np.bincount(shown, weights=pixels[unpainted], minlength=count)
    level = sums[reaching].sum() / max(int(areas[reaching].sum()), 1)
    paper = reaching | (sums >= _ink_below(np.array(level)) * areas)
    paper[0] = False
    return np.asarray(paper[regions] & unpainted, dtype=np.float32)


def _mean_nearby(pixels: np.ndarray, where: np.ndarray, window: int, empty: float) -> np.ndarray:
    """The mean of the pixels `where` (0 or 1) holds, weighted towards each pixel over about
    two `window`s (`empty` where there are none)."""
    weight = cv2.blur(cv2.blur(where, (window, window)), (window, window))
    total = cv2.blur(cv2.blur(pixels * where, (window, window)), (window, window))
    return np.where(weight > 0.01, total / np.maximum(weight, 0.01), empty)


class EdgeFreeRegions:
    """The regions of an image that no edge crosses, 4-connected (so a gap of a diagonal pixel
    does not join them): worked out once, when first needed, for both readings of the image
    (light paper on a darker desk, and the other way round), as edges do not depend on which
    side is light."""

    def __init__(self, pixels: np.ndarray) -> None:
        self._pixels = pixels

    @cached_property
    def edges(self) -> np.ndarray:
        return _edges(self._pixels)

    @cached_property
    def bridged_edges(self) -> np.ndarray:
        """The edges with the gaps of up to BRIDGED_GAP pixels between them closed (255)."""
        return np.asarray(cv2.morphologyEx(self.edges, cv2.MORPH_CLOSE, _BRIDGE))

    @cached_property
    def labelled(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(How many regions, each pixel's region (0: on or beside an edge), their stats)."""
        return _regions_between(self.edges)

    @cached_property
    def bridged(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The same with gaps of up to BRIDGED_GAP pixels in the edges closed: where a sheet's
        edge fades out against a desk about as bright for a few pixels, the paper and the desk
        are otherwise one region."""
        return _regions_between(self.bridged_edges)


def _regions_between(edges: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    unbroken = cv2.bitwise_not(_dilated(edges, _SQUARE_3))
    count, regions, stats, _ = cv2.connectedComponentsWithStats(unbroken, connectivity=4)
    return count, regions, stats


def _find_sheet(
    gray: Grayscale, edge_free: EdgeFreeRegions, *, bridge_gaps: bool = True
) -> Sheet | None:
    """The sheet, when `gray` is a photo of a sheet lying on a desk; else None.

    Regions darker than Otsu's threshold must run along a good part of the image's border (the
    desk, or the sheet's own shade), and a sharp edge must enclose a large region with them
    outside it: the brightest large region no edge crosses is the paper (with the large bright
    regions next to it: the paper in a shadow with a sharp edge), and its convex hull is the
    sheet (so ink on it is never painted over). The shade of uneven light, a shadow or a
    vignette darkens gradually and has no edge; an edge must also step down across the
    outline by more than the paper changes just inside it. With `bridge_gaps`, a sheet whose
    edge fades out for a few pixels is looked for too.
    """
    pixels = gray.pixels
    if min(pixels.shape) < DESK_MIN_SIDE:
        return None
    levels = cv2.convertScaleAbs(pixels)
    _, otsu = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    # The paper is on the bright side of Otsu's threshold (read the other way round, a white
    # page holds too little on its dark side to be one).
    if cv2.countNonZero(otsu) < SHEET_MIN_AREA * pixels.size:
        return None
    dark = 1 - np.asarray(otsu, dtype=np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=8, ltype=cv2.CV_32S)
    along_border = np.bincount(_border(labels), minlength=count)
    along_border[0] = 0  # Bright pixels.
    perimeter = 2 * (sum(pixels.shape) - 2)
    desk_parts = np.flatnonzero(along_border >= DESK_PART_BORDER * perimeter)
    if along_border[desk_parts].sum() < DESK_MIN_BORDER * perimeter:
        return None
    is_desk_part = np.zeros(count, dtype=np.uint8)
    is_desk_part[desk_parts] = 1
    along_border_mask = is_desk_part[labels]
    outline = _paper_outline(pixels, dark, along_border_mask, edge_free.labelled)
    if outline is not None:
        return _sheet_within(gray, outline)
    if not bridge_gaps:
        return None
    # A sheet's edge against a desk about as bright can fade out for a few pixels, and join the
    # paper to the desk: then look again with such gaps bridged.
    bridging = cv2.compare(edge_free.bridged_edges, edge_free.edges, cv2.CMP_GT)
    outline = _paper_outline(pixels, dark, along_border_mask, edge_free.bridged, bridging)
    return None if outline is None else _sheet_within(gray, outline)


def _sheet_within(gray: Grayscale, outline: np.ndarray) -> Sheet:
    """The sheet with this outline in `gray`'s pixels."""
    corners = outline.reshape(-1, 2).astype(np.float32) / gray.scale + (gray.left, gray.top)
    return Sheet(corners, gray.scale, max(gray.pixels.shape) / gray.scale)


def _paper_outline(
    pixels: np.ndarray,
    dark: np.ndarray,
    desk_along_border: np.ndarray,
    regions_found: tuple[int, np.ndarray, np.ndarray],
    bridging: np.ndarray | None = None,
) -> np.ndarray | None:
    """The outline of the sheet among these edge-free regions (see `_find_sheet`), or None:
    `dark` is 1 below Otsu's threshold, `desk_along_border` 1 in the dark regions that run
    along the image's border. When the regions were found with gaps in the edges bridged
    (`bridging`: the pixels that bridge them), the sheet must also cover BRIDGED_SHEET_MIN_AREA
    of the image, most of the bridges must lie outside its outline or along it, and the desk
    must be darker than the paper by the step BRIDGED_DESK_DEPTH pixels past the outline too."""
    region_count, regions, stats = regions_found
    if region_count < 2:
        return None
    # The paper is the brightest of them: the one with the most pixels above Otsu's threshold
    # (a desk around the sheet can be larger).
    bright_area = np.bincount(regions[dark == 0], minlength=region_count)
    bright_area[0] = 0  # Edges.
    brightest = int(np.argmax(bright_area))
    if stats[brightest, cv2.CC_STAT_AREA] < SHEET_MIN_AREA * pixels.size:
        return None
    # A shadow with a sharp edge splits the paper: the shaded part is another large region,
    # as bright as paper against the desk, next to the lit part across the shadow's edge.
    areas = stats[:, cv2.CC_STAT_AREA]
    near_paper = np.bincount(
        regions[_dilated((regions == brightest).view(np.uint8), _SQUARE_9) == 1],
        minlength=region_count,
    )
    paper_regions = np.flatnonzero(
        (near_paper > 0)
        & (bright_area >= SHADED_PAPER_BRIGHT * areas)
        & (areas >= SHADED_PAPER_MIN_AREA * pixels.size)
    )
    paper_regions = np.union1d(paper_regions[paper_regions > 0], [brightest])
    is_paper = np.zeros(region_count, dtype=np.uint8)
    is_paper[paper_regions] = 1
    paper = is_paper[regions]
    paper_area = int(areas[paper_regions].sum())
    # The hull of the regions' outer contours: the same as of all their pixels, at a tenth of
    # the cost.
    contours, _ = cv2.findContours(paper, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = cv2.convexHull(np.concatenate(contours))
    sheet = np.zeros_like(paper)
    cv2.fillConvexPoly(sheet, outline, 1)
    desk = 1 - sheet
    # A sheet is paper all over but for the ink on it, and whatever lies around it stays
    # outside it. The inside of a thick light stroke on a dark canvas is not a sheet: the canvas
    # fills the bays of its outline and the holes of its loops.
    sheet_area = cv2.countNonZero(sheet)
    if paper_area < SHEET_MIN_SOLIDITY * sheet_area:
        return None
    # Bridges also close the gaps between the edges of a thick stroke, or of a loop: what is
    # left of a light one on a dark canvas is a bright region walled off, but a small one.
    if bridging is not None and sheet_area < BRIDGED_SHEET_MIN_AREA * pixels.size:
        return None
    # (The cheaper checks first: a page filling the photo fails this one.)
    if int(cv2.countNonZero(desk_along_border & desk)) < DESK_MIN_AREA * pixels.size:
        return None
    to_desk = cv2.distanceTransform(sheet, cv2.DIST_C, 3)
    if bridging is not None:
        # The bridges must close the sheet's outline, not join strokes inside it into something
        # sheet-like.
        well_inside = int(np.count_nonzero(bridging[to_desk > DESK_EDGE + 1]))
        if well_inside > cv2.countNonZero(bridging) - well_inside:
            return None
    inside = np.bincount(regions[to_desk > DESK_EDGE + 1], minlength=region_count)
    outside = np.bincount(regions[desk == 1], minlength=region_count)
    inside[0] = 0  # Edges.
    inside[paper_regions] = 0  # The paper itself.
    if inside[outside > 0].sum() > SHEET_MAX_BAYS * sheet_area:
        return None
    # Paper outside the outline as large as a good part of the sheet's, and apart from it (not
    # just across its edge, as a desk is): the sheet is a page that a large digit running off
    # the image splits, not a sheet on a desk.
    apart = desk & (1 - _dilated(paper, _SQUARE_9))
    bright_outside = np.bincount(regions[(dark == 0) & (apart == 1)], minlength=region_count)
    bright_outside[0] = 0  # Edges.
    beside = np.bincount(regions[(desk == 1) & (apart == 0)], minlength=region_count)
    bright_outside[beside > 0] = 0
    if bright_outside.max() > DESK_MAX_PAPER_OUTSIDE * bright_area[paper_regions].sum():
        return None
    # The step is read a few pixels either side of the outline, past the blurred edge itself,
    # against the paper nearby: the light can differ a lot between the sheet's sides, so only
    # a comparison on the spot tells a step from a slope. (Chessboard distances: to the desk
    # for the sheet's pixels, to the sheet for the desk's.)
    to_sheet = cv2.distanceTransform(desk, cv2.DIST_C, 3)
    paper_near_edge = _local_mean(pixels, paper & (to_desk >= 2) & (to_desk <= 4))
    paper_further_in = _local_mean(pixels, paper & (to_desk >= 6) & (to_desk <= 8))
    compared = (to_sheet >= 2) & (to_sheet <= 4) & (paper_near_edge >= 0) & (paper_further_in >= 0)
    if not compared.any():
        return None
    step = _median(paper_near_edge[compared] - pixels[compared])
    slope = _median(np.abs(paper_near_edge[compared] - paper_further_in[compared]))
    if step < DESK_MIN_STEP or step < DESK_STEP_OVER_SLOPE * slope:
        return None
    if bridging is not None:
        # Bridged to the photo's sides, a large digit's stroke can wall off part of the
        # background as a sheet: a stroke is darker than the paper only across its width.
        desk_further_out = _local_mean(
            pixels, (to_sheet >= BRIDGED_DESK_DEPTH) & (to_sheet <= BRIDGED_DESK_DEPTH + 4)
        )
        further = compared & (desk_further_out >= 0)
        if not further.any():
            return None
        if _median(paper_near_edge[further] - desk_further_out[further]) < DESK_MIN_STEP:
            return None
    return outline


def _find_darker_sheet(gray: Grayscale, edge_free: EdgeFreeRegions) -> Sheet | None:
    """A sheet darker than the desk around it (grey, brown or coloured paper on a white table):
    a sheet in the negative of `gray` with something darker than its paper written on it and
    nothing much lighter on it. In the negative, the thick strokes of a digit on white paper
    look like a sheet too, but the paper between them is lighter, and nothing on them darker."""
    sheet = _find_sheet(
        Grayscale(255 - gray.pixels, gray.left, gray.top, gray.scale), edge_free, bridge_gaps=False
    )
    if sheet is None:
        return None
    inside, paper, ink = _on_sheet(sheet, gray)
    # A darker sheet is darker than its desk, not just ringed by a line of ink (the loop of a
    # digit drawn with a fine pen, whose inside is as light as the paper outside): compared
    # past the blur of its outline, on either side.
    to_desk = cv2.distanceTransform(inside.view(np.uint8), cv2.DIST_C, 3)
    to_sheet = cv2.distanceTransform((~inside).view(np.uint8), cv2.DIST_C, 3)
    sheet_near_edge = gray.pixels[(to_desk >= 2) & (to_desk <= 6)]
    desk_near_edge = gray.pixels[(to_sheet >= 2 * DESK_EDGE) & (to_sheet <= 2 * DESK_EDGE + 4)]
    if sheet_near_edge.size == 0 or desk_near_edge.size == 0:
        return None
    if _median(desk_near_edge) - _median(sheet_near_edge) < DESK_MIN_STEP:
        return None
    light = (gray.pixels > paper + SHEET_LIGHT_STEP) & inside
    if cv2.countNonZero(light.view(np.uint8)) > SHEET_MAX_LIGHT * cv2.countNonZero(
        inside.view(np.uint8)
    ):
        return None
    return sheet if cv2.countNonZero(ink.view(np.uint8)) >= SHEET_MIN_INK else None


def _written_on(sheet: Sheet, gray: Grayscale) -> bool:
    """Whether something darker than the paper is on the sheet (at least SHEET_MIN_INK pixels).
    Read first against the paper's level with the ink in it: when that already shows enough ink,
    so does the paper without it, which is lighter (and most sheets have a digit on them)."""
    inside = sheet.well_inside(gray)
    _, ink = _ink_against(gray, inside, inside)
    if cv2.countNonZero(ink.view(np.uint8)) < SHEET_MIN_INK:
        _, ink = _ink_against(gray, inside, inside & ~ink)
    return cv2.countNonZero(ink.view(np.uint8)) >= SHEET_MIN_INK


def _on_sheet(sheet: Sheet, gray: Grayscale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Where `gray` shows the sheet, the paper's level nearby less the ink, the ink on it.)"""
    inside = sheet.well_inside(gray)
    _, ink = _ink_against(gray, inside, inside)
    paper, ink = _ink_against(gray, inside, inside & ~ink)
    return inside, paper, ink


def _ink_against(
    gray: Grayscale, inside: np.ndarray, paper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(The paper's level nearby, read where `paper` holds; the ink `inside`, darker than it.)"""
    level = _paper_level(gray, paper)
    return level, (gray.pixels < _ink_below(level)) & inside


def _paper_level(gray: Grayscale, paper: np.ndarray) -> np.ndarray:
    """The mean of `gray` where `paper` (boolean) holds, within SHADE_WINDOW of the image."""
    window = max(3, round(SHADE_WINDOW * max(gray.pixels.shape)) | 1)
    return _mean_nearby(gray.pixels, paper.astype(np.float32), window, 0.0)


def _ink_below(paper: np.ndarray) -> np.ndarray:
    """The level ink on paper of these levels is darker than: by SHEET_INK_CONTRAST of the
    paper's level (ink takes a share of the light, so on darker paper it is fewer gray levels
    darker), and by at least SHEET_INK_MIN_STEP (the grain and noise of a dark surface)."""
    return np.asarray(np.minimum(paper * (1 - SHEET_INK_CONTRAST), paper - SHEET_INK_MIN_STEP))


def _edges(levels: np.ndarray) -> np.ndarray:
    """Canny's edges (255) of an image: steps of at least EDGE_STEP gray levels a pixel, and
    their continuations down to half that. Uneven light, shadows and vignettes change far
    more slowly."""
    levels = levels if levels.dtype == np.uint8 else cv2.convertScaleAbs(levels)
    # Sobel's 3x3 kernel answers 8 for a step of one gray level a pixel.
    return np.asarray(cv2.Canny(levels, 4 * EDGE_STEP, 8 * EDGE_STEP, L2gradient=True))


def _local_mean(pixels: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The mean of the pixels `where` holds within DESK_STEP_REACH of each pixel (-1 where
    there are none)."""
    window = (2 * DESK_STEP_REACH + 1, 2 * DESK_STEP_REACH + 1)
    chosen = where.astype(np.float32)
    weight = cv2.blur(chosen, window, borderType=cv2.BORDER_CONSTANT)
    total = cv2.blur(pixels * chosen, window, borderType=cv2.BORDER_CONSTANT)
    return np.asarray(np.where(weight > 1e-6, total / np.maximum(weight, 1e-6), -1.0))


# A sheet on a desk: images (or parts looked at closer) smaller than DESK_MIN_SIDE are never
# one. The desk runs along at least DESK_MIN_BORDER of the image's border, in parts of at least
# DESK_PART_BORDER each (ink touching the border runs along far less), covers at least
# DESK_MIN_AREA of the image, and is at least DESK_MIN_STEP gray levels darker than the paper
# at the sheet's edge nearby, a step at least DESK_STEP_OVER_SLOPE times the change in the
# paper just further in (within DESK_STEP_REACH pixels); the paper covers at least
# SHEET_MIN_AREA of the image and SHEET_MIN_SOLIDITY of its hull, regions beyond the hull reach
# into it (past DESK_EDGE) over at most SHEET_MAX_BAYS of it, and no bright region without an
# edge, outside it and apart from its paper, is larger than DESK_MAX_PAPER_OUTSIDE of the paper
# on it. DESK_EDGE pixels past its outline (in the image it was found in) are painted.
DESK_MIN_SIDE = 48
DESK_MIN_BORDER = 0.15
DESK_PART_BORDER = 0.05
DESK_MIN_AREA = 0.01
DESK_MIN_STEP = 20
DESK_STEP_OVER_SLOPE = 2
DESK_STEP_REACH = 12
SHEET_MIN_AREA = 0.1
SHEET_MIN_SOLIDITY = 0.6
SHEET_MAX_BAYS = 0.01
DESK_MAX_PAPER_OUTSIDE = 0.3
DESK_EDGE = 3
# A region at least SHADED_PAPER_MIN_AREA of the image, next to the paper and with at least
# SHADED_PAPER_BRIGHT of it on the paper's side of Otsu's threshold, is paper in a shadow.
SHADED_PAPER_MIN_AREA = 0.05
SHADED_PAPER_BRIGHT = 0.9
# Something is written on a sheet when at least SHEET_MIN_INK of its pixels are ink (darker
# than its paper nearby by SHEET_INK_CONTRAST of the paper's level, and by SHEET_INK_MIN_STEP
# gray levels at least); a sheet darker than the desk has at most SHEET_MAX_LIGHT of its pixels
# SHEET_LIGHT_STEP gray levels lighter than its paper.
SHEET_INK_CONTRAST = 0.1
SHEET_INK_MIN_STEP = 15
SHEET_MIN_INK = 4
SHEET_LIGHT_STEP = 25
SHEET_MAX_LIGHT = 0.01
# The paper's brightness on a sheet is its mean within this share of the image's longer side.
SHADE_WINDOW = 0.08
# Gray levels darker than the paper nearby that a pixel of a sheet must be to be ink, not paper.
INK_BELOW_PAPER = 8
# An edge: a step of at least this many gray levels a pixel.
EDGE_STEP = 12


def _find_glyph(gray: Grayscale, inverted: bool) -> tuple[np.ndarray, ImageBox] | None:
    """The glyph's pixels and where they are in the image, or None if there is no ink."""
    found = _isolate_glyph(255 - gray.pixels if inverted else gray.pixels)
    if found is None:
        return None
    glyph, (rows, columns) = found
    return glyph, gray.image_box(rows, columns)


def _already_like_mnist(gray: np.ndarray) -> bool:
    """28x28, light ink on black, ink box 20 px, centred by mass: MNIST's own format.

    Such an image is passed to the model as it is, the way MNIST made it: the full pipeline
    would re-centre it by a pixel at most and stretch its ink by a few gray levels (it gives
    every official test digit the same label either way), so the common case of a client
    sending MNIST-style digits stays cheap. A digit's ink may reach the frame's edge (one test
    digit in eight does).
    Everything is read off the row and column sums (pixels are never negative).
    """
    if gray.shape != (INPUT_SIDE, INPUT_SIDE):
        return False
    row_sums, column_sums = gray.sum(axis=1), gray.sum(axis=0)
    rows, columns = np.flatnonzero(row_sums), np.flatnonzero(column_sums)
    if rows.size == 0 or max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 != MNIST_BOX_SIDE:
        return False
    if float(gray.max()) < 255 - MIN_INK_CONTRAST:  # Faint ink still needs stretching.
        return False
    row_centre, column_centre = _centre_of_mass_from_sums(row_sums, column_sums)
    return abs(row_centre - INPUT_SIDE / 2) <= 1 and abs(column_centre - INPUT_SIDE / 2) <= 1


def _dark_on_light(gray: np.ndarray) -> bool:
    """Whether the ink is darker than its background (paper, whiteboards, canvases).

    MNIST is light ink on black, so such images are inverted. The border shows the background
    if anything does; with the lighting fitted to it taken out (a dark vignette around bright
    paper is not a dark background), the ink is whichever side of it holds more contrast.
    """
    lowest, highest, _, _ = cv2.minMaxLoc(_border(gray))
    if lowest == highest:  # A flat border (a clean scan, a canvas): it is the background.
        residual, border_level, margin = gray - lowest, 0.0, 1.0
    else:
        # Every pixel of the ring: a lattice misses its bottom row or right column unless they
        # fall on it, and a fit to two sides of the image can tilt far off on the others.
        residual = gray - _illumination(gray, _ring(gray.shape), step=1)
        border = _border(residual)
        border_level = _median(border)
        margin = 3 * 1.4826 * _median(np.abs(border - border_level)) + 1
    total = cv2.sumElems(residual)[0]
    by_border = _ink_is_darker(residual, total, border_level, margin)
    # A large digit can cover most of the border, and the border then shows ink; ink rarely
    # covers most of the image. When the two readings of the background disagree, the ink is
    # the side that forms thin strokes. (The majority's level is read off the lattice the
    # lighting is fitted on: a quarter of the pixels of a large image tell the same median.)
    step = _lattice_step(residual.size)
    majority_level = _median(residual[::step, ::step])
    by_majority = _ink_is_darker(residual, total, majority_level, margin)
    if by_border == by_majority:
        return by_border
    darker = residual < (border_level + majority_level) / 2
    return _stroke_width(darker.astype(np.float32) * 255) < _stroke_width(
        (~darker).astype(np.float32) * 255
    )


def _ink_is_darker(residual: np.ndarray, total: float, background: float, margin: float) -> bool:
    """Whether more contrast lies below `background - margin` than above `background + margin`.

    That contrast is the sum of what clipping to the margin's band takes away: `total` (the sum
    of `residual`) minus the sum clipped, negative when the darker side holds more.
    """
    clipped = np.minimum(np.maximum(residual, background - margin), background + margin)
    return float(cv2.sumElems(clipped)[0]) > total


def _isolate_glyph(gray: np.ndarray) -> tuple[np.ndarray, Box] | None:
    """The glyph's strokes, cropped to them and stretched to 255, and the crop's (rows, columns)
    in `gray` (light ink on dark); None if there is no ink.

    Uneven lighting is fitted and removed, then ink is judged against the ink's own level, not
    against zero: JPEG artefacts, paper grain and what the lighting fit left behind are faint
    next to real strokes, and counting them as ink would make the crop box span the image.
    Strokes are grown from strong pixels into fainter ones they touch (hysteresis), and the
    glyph is the strongest group of strokes plus whatever else is substantial and near it, so
    specks and smudges away from the digit are dropped.
    """
    flattened, noise_floor, ink_level = _flatten(gray)
    if flattened is None:
        return None
    if ink_level - noise_floor < MIN_INK_CONTRAST:  # Only noise is left.
        return None
    faint = flattened > max(noise_floor, FAINT_INK * ink_level)
    if min(faint.shape) >= RULED_MIN_SIDE:
        faint &= ~_ruled_lines(faint & (flattened < STRONG_INK * ink_level))
    # Wu's algorithm numbers the strokes in raster order, as scipy.ndimage.label does.
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        faint.view(np.uint8), 8, cv2.CV_32S, cv2.CCL_SAUF
    )
    masses = np.bincount(labels.ravel(), weights=flattened.ravel(), minlength=count)
    has_strong_pixels = np.bincount(
        labels[flattened >= STRONG_INK * ink_level], minlength=count
    ).astype(bool)
    has_strong_pixels[0] = False  # The background.
    strokes = [
        (float(masses[index]), _stats_box(stats[index]), int(index))
        for index in np.flatnonzero(has_strong_pixels).tolist()
    ]
    kept = _glyph_strokes(strokes)
    rows, columns = _grown(_union(box for _, box, _ in kept), flattened.shape)
    is_kept = np.zeros(count, dtype=np.uint8)
    is_kept[[index for _, _, index in kept]] = 1
    # The strokes' anti-aliased edges are fainter than FAINT_INK: keep a pixel's rim too.
    glyph_mask = _dilated(is_kept[labels[rows, columns]], _SQUARE_3)
    glyph = flattened[rows, columns] - noise_floor
    glyph *= glyph_mask
    glyph *= 255 / (ink_level - noise_floor)
    glyph = np.minimum(np.maximum(glyph, 0, out=glyph), 255, out=glyph)
    left, top, width, height = cv2.boundingRect((glyph > 0).view(np.uint8))
    box = (
        slice(rows.start + top, rows.start + top + height),
        slice(columns.start + left, columns.start + left + width),
    )
    return glyph[top : top + height, left : left + width], box


def _ruled_lines(faint: np.ndarray) -> np.ndarray:
    """The lines of squared or ruled paper: straight rows or columns of faint pixels longer
    than RULED_LINE_LENGTH of the image, at least RULED_MIN_LINES of them side by side, which
    strokes grown into faint pixels would otherwise follow out of the digit. A digit's own
    straight strokes are strong ink, or one or two faint hairlines."""
    length = max(3, round(RULED_LINE_LENGTH * max(faint.shape))) | 1
    mask = faint.view(np.uint8)
    lines = np.zeros_like(mask)
    # Most images have no row or column with that many faint pixels: nothing to look for.
    for counted_per, footprint in ((_PER_ROW, (1, length)), (_PER_COLUMN, (length, 1))):
        if cv2.reduce(mask, counted_per, cv2.REDUCE_SUM, dtype=cv2.CV_32S).max() < length:
            continue
        straight = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones(footprint, dtype=np.uint8))
        count, _ = cv2.connectedComponents(straight, connectivity=8)
        if count - 1 >= RULED_MIN_LINES:
            lines |= np.asarray(straight, dtype=np.uint8)
    return lines.view(bool)


# Lines of squared or ruled paper are looked for in images at least RULED_MIN_SIDE pixels on
# their shorter side, as at least RULED_MIN_LINES faint straight runs of at least
# RULED_LINE_LENGTH of the longer side.
RULED_MIN_SIDE = 48
RULED_LINE_LENGTH = 0.15
RULED_MIN_LINES = 3
# cv2.reduce's dimension: to one column (a sum per row), to one row (a sum per column).
_PER_ROW, _PER_COLUMN = 1, 0
# Relative to the ink's own level (its 99th percentile above the noise): a stroke is grown
# from pixels at least STRONG_INK strong into touching pixels at least FAINT_INK strong.
STRONG_INK = 0.5
FAINT_INK = 0.2
# Other strokes join the strongest one when they carry at least this share of its ink and lie
# within this share of the glyph's size from it (broken strokes, a separate bar of a 4 or 5).
JOIN_MIN_MASS = 0.04
JOIN_MAX_GAP = 0.35
# A stroke with a fifth of the strongest one's ink is a part of the digit, not a speck: it joins
# from further away (a 5 whose bar was written well above its body).
PART_MIN_MASS = 0.2
PART_MAX_GAP = 0.75
_SQUARE_3 = np.ones((3, 3), dtype=np.uint8)
_SQUARE_5 = np.ones((5, 5), dtype=np.uint8)
_SQUARE_9 = np.ones((9, 9), dtype=np.uint8)
# Gaps in a sheet's edge up to BRIDGED_GAP pixels wide are bridged (`EdgeFreeRegions.bridged`);
# a sheet so found must cover at least BRIDGED_SHEET_MIN_AREA of the image (sheets on desks so
# found cover 41-92 % of it, pieces of thick light strokes on a dark canvas 17-33 %) and have the
# desk darker still BRIDGED_DESK_DEPTH pixels past its outline, past the width of a large digit's
# stroke at the working size.
BRIDGED_GAP = 6
BRIDGED_SHEET_MIN_AREA = 0.5
BRIDGED_DESK_DEPTH = 10
_BRIDGE = np.ones((BRIDGED_GAP + 1, BRIDGED_GAP + 1), dtype=np.uint8)
# The service runs one preprocessing per thread and several threads per process: OpenCV's own
# threads would only compete with them for the cores.
cv2.setNumThreads(1)

Box = tuple[slice, slice]


def _stats_box(stats: np.ndarray) -> Box:
    """(rows, columns) of a component from OpenCV's (left, top, width, height, area) row."""
    left, top, width, height = (int(value) for value in stats[:4])
    return slice(top, top + height), slice(left, left + width)


def _dilated(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Grey or binary dilation (the maximum over the footprint), ignoring what lies outside."""
    if mask.dtype == np.bool_:
        return cv2.dilate(mask.view(np.uint8), footprint).view(np.bool_)
    return np.asarray(cv2.dilate(mask, footprint))


def _glyph_strokes(strokes: list[tuple[float, Box, int]]) -> list[tuple[float, Box, int]]:
    """The strongest stroke and, repeatedly, every substantial stroke near what is kept."""
    strokes = sorted(strokes, key=lambda stroke: -stroke[0])
    kept, candidates = strokes[:1], strokes[1:]
    joined = True
    while joined and candidates:
        joined = False
        rows, columns = _union(box for _, box, _ in kept)
        size = max(rows.stop - rows.start, columns.stop - columns.start)
        for stroke in candidates:
            mass, (stroke_rows, stroke_columns), _ = stroke
            gap = max(_gap(rows, stroke_rows), _gap(columns, stroke_columns)) / size
            share = mass / kept[0][0]
            if (share >= JOIN_MIN_MASS and gap <= JOIN_MAX_GAP) or (
                share >= PART_MIN_MASS and gap <= PART_MAX_GAP
            ):
                kept.append(stroke)
                candidates.remove(stroke)
                joined = True
                break
    return kept


def _grown(box: Box, shape: tuple[int, ...]) -> Box:
    """The box one pixel larger on every side, within the image."""
    rows, columns = box
    return (
        slice(max(rows.start - 1, 0), min(rows.stop + 1, shape[0])),
        slice(max(columns.start - 1, 0), min(columns.stop + 1, shape[1])),
    )


def _gap(first: slice, second: slice) -> int:
    """Pixels between two index ranges (0 when they overlap or touch)."""
    return int(max(0, second.start - first.stop, first.start - second.stop))


def _union(boxes: Iterable[Box]) -> Box:
    rows, columns = zip(*boxes, strict=True)
    return (
        slice(min(row.start for row in rows), max(row.stop for row in rows)),
        slice(min(column.start for column in columns), max(column.stop for column in columns)),
    )


def _flatten(gray: np.ndarray) -> tuple[np.ndarray | None, float, float]:
    """(gray minus a fitted background surface, the level below which residuals are noise, the
    ink's level above it).

    Clean input (an MNIST digit, a canvas drawing) has a flat zero background and passes through
    unchanged: every estimate below is then exactly zero. The robust statistics come from 256-level
    histograms: a handful of vector operations instead of a sort per statistic.
    """
    lowest, highest, _, _ = cv2.minMaxLoc(gray)
    if highest - lowest < MIN_INK_CONTRAST:
        return None, 0.0, 0.0
    # The gray level each pixel rounds to: a 16-bit scan's paper at 254.99998 is at level 255
    # like an 8-bit one's, not above it.
    levels = cv2.convertScaleAbs(gray)
    median, spread = _median_and_spread(cv2.calcHist([levels], [0], None, [256], [0, 256]))
    # Surely background: below Otsu's threshold and near the median, so thin ink cannot skew it.
    otsu, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    background = levels <= min(median + 3 * spread, otsu)
    for fit in range(1, BACKGROUND_FITS + 1):
        lowest, highest, lowest_at, _ = cv2.minMaxLoc(gray, background.view(np.uint8))
        if lowest_at[0] < 0:  # No background pixel at all.
            return None, 0.0, 0.0
        if lowest == highest:
            # Every background pixel at one level (a clean scan, a canvas): that level is the
            # background, and there is no noise.
            flattened, noise_floor = gray - lowest, 0.0
            return flattened, noise_floor, _ink_level(flattened, noise_floor)
        surface = _illumination(gray, background)
        flattened = gray - surface
        # Residuals may be slightly negative; shift them into the histogram's range.
        residual_median, residual_spread = _median_and_spread(
            _histogram(flattened, background, offset=_RESIDUAL_OFFSET)
        )
        noise_floor = max(residual_median - _RESIDUAL_OFFSET + 4 * residual_spread, 0.0)
        ink_level = _ink_level(flattened, noise_floor)
        # A background flat to within a gray level casts no shadow for a second fit to find.
        if fit == BACKGROUND_FITS or isinstance(surface, float):
            break
        # Under strong uneven light a shadowed corner is as far from the median as ink, and the
        # first fit left it out. Against the fitted surface it is far weaker than the ink: fit
        # again with everything that is, except the strokes' own faint edges.
        strong = flattened > max(noise_floor, RESIDUE * ink_level)
        refitted = ~_dilated(strong, _SQUARE_5)
        if np.array_equal(refitted, background):
            break
        background = refitted
    return flattened, noise_floor, ink_level


# Fits of the background surface, each to the pixels the previous one left weaker than RESIDUE
# times the ink's level.
BACKGROUND_FITS = 2
RESIDUE = 0.35


def _ink_level(flattened: np.ndarray, noise_floor: float) -> float:
    """The strokes' typical strength: the 99th percentile of what stands above the noise."""
    above_floor = _histogram(flattened)
    above_floor[: int(noise_floor) + 1] = 0
    return float(_quantile(above_floor, 0.99)) if above_floor.any() else 0.0


_LEVELS = np.arange(256)
# Row m: how far each level is from level m.
_DISTANCES = np.abs(_LEVELS[:, np.newaxis] - _LEVELS)
_RESIDUAL_OFFSET = 128


def _histogram(
    values: np.ndarray, where: np.ndarray | None = None, offset: float = 0
) -> np.ndarray:
    """Counts of `values + offset` (where `where` holds) rounded to the 256 gray levels;
    values beyond the levels are left out."""
    mask = None if where is None else where.view(np.uint8)
    return cv2.calcHist([values], [0], mask, [256], [-offset - 0.5, 255.5 - offset]).ravel()


def _quantile(histogram: np.ndarray, fraction: float) -> int:
    cumulative = histogram.cumsum()
    return int(cumulative.searchsorted(fraction * cumulative[-1]))


def _median_and_spread(histogram: np.ndarray) -> tuple[int, float]:
    """The median level and a robust standard deviation (1.4826 x median absolute deviation)."""
    histogram = histogram.ravel()
    cumulative = histogram.cumsum()
    half = 0.5 * cumulative[-1]
    median = int(cumulative.searchsorted(half))
    distances = np.bincount(_DISTANCES[median], weights=histogram, minlength=256)
    return median, 1.4826 * int(distances.cumsum().searchsorted(half))


def _illumination(
    gray: np.ndarray, background: np.ndarray, step: int | None = None
) -> np.ndarray | float:
    """A smooth quadratic surface fitted to the background pixels (uneven lighting, shadows),
    read at every `step`-th pixel of every `step`-th row (by default, a lattice of about a
    thousand pixels: that pins down six coefficients, and more only cost time)."""
    height, width = gray.shape
    step = _lattice_step(gray.size) if step is None else step
    samples = np.ascontiguousarray(gray[::step, ::step])
    chosen = np.ascontiguousarray(background[::step, ::step]).view(np.uint8)
    count = cv2.countNonZero(chosen)
    if count == 0:
        return 0.0
    lowest, highest, _, _ = cv2.minMaxLoc(samples, chosen)
    if count < 12 or highest - lowest < 1:
        return float(cv2.mean(samples, chosen)[0])
    # The least-squares normal equations, from moments of the chosen pixels' positions: the
    # products of two of (1, x, y, x^2, xy, y^2) are the x^i y^j with i + j <= 4.
    weights = chosen.astype(np.float64)
    weighted = weights * samples
    rows, columns = _lattice_powers(height, step), _lattice_powers(width, step)
    position_moments = rows.T @ weights @ columns
    value_moments = rows[:, :3].T @ weighted @ columns[:, :3]
    normal = position_moments[_PAIR_Y_POWERS, _PAIR_X_POWERS] + _RIDGE
    _, solution = cv2.solve(
        normal, value_moments[_Y_POWERS, _X_POWERS][:, np.newaxis], flags=cv2.DECOMP_LU
    )
    c = solution.ravel()
    # The surface as (1, y, y^2) x coefficients x (1, x, x^2): two small products.
    coefficients = np.array([[c[0], c[1], c[3]], [c[2], c[4], 0.0], [c[5], 0.0, 0.0]])
    return np.asarray((_powers(height) @ coefficients) @ _powers(width).T, dtype=np.float32)


def _lattice_step(size: int) -> int:
    return max(1, int(np.sqrt(size / 1024)))


# The fitted terms 1, x, y, x^2, xy, y^2 as powers of x and of y.
_X_POWERS = np.array([0, 1, 0, 2, 1, 0])
_Y_POWERS = np.array([0, 0, 1, 0, 1, 2])
_PAIR_X_POWERS = _X_POWERS[:, np.newaxis] + _X_POWERS
_PAIR_Y_POWERS = _Y_POWERS[:, np.newaxis] + _Y_POWERS


@lru_cache(maxsize=64)
def _powers(size: int) -> np.ndarray:
    """(size, 3): 1, t and t^2 for t from 0 to 1 over `size` pixels (read-only, shared)."""
    return _lattice_powers(size, 1)[:, :3]


@lru_cache(maxsize=128)
def _lattice_powers(size: int, step: int) -> np.ndarray:
    """(lattice points, 5): t^0 to t^4 at every `step`-th of `size` pixels, t from 0 to 1."""
    t = np.arange(0, size, step) / max(size - 1, 1)
    powers = t[:, np.newaxis] ** np.arange(5)
    powers.flags.writeable = False
    return powers


# Keeps the six normal equations solvable when the background pixels cannot pin a term down.
_RIDGE = np.eye(6) * 1e-6


def _scale_into_box(glyph: np.ndarray, box_side: int, stroke_width: float) -> np.ndarray:
    height, width = glyph.shape
    scale = box_side / max(height, width)
    if scale == 1:
        return glyph
    glyph = _thicken_thin_strokes(glyph, scale, stroke_width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(glyph.astype(np.float32)).resize(
        new_size, Image.Resampling.LANCZOS if scale > 1 else Image.Resampling.BOX
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 255)


def _thicken_thin_strokes(glyph: np.ndarray, scale: float, width: float) -> np.ndarray:
    """Dilate strokes that scaling would leave thinner than MNIST's pen, at full strength.

    A fine pen shrunk to the working size leaves lines narrower than a pixel: faint as well as
    thin. They are widened to MNIST's pen and their level restored, so the model sees strokes
    like the ones it was trained on.
    """
    target = MIN_STROKE_WIDTH / scale
    if width >= THIN_STROKE * target:
        return glyph
    radius = min(max(1, round((target - width) / 2)), 8)
    thick = _dilated(glyph, _disk(radius))
    strokes = thick[thick > FAINT_INK * float(thick.max())]
    level = float(np.percentile(strokes, 90)) if strokes.size else 0.0
    if level <= 0:
        return np.asarray(thick, dtype=np.float32)
    return np.asarray(np.clip(thick * (255 / level), 0, 255), dtype=np.float32)


# Strokes narrower than this share of MNIST's pen width are thickened.
THIN_STROKE = 0.75


def _stroke_width(glyph: np.ndarray) -> float:
    """The strokes' mean width in pixels: ink mass (full-strength pixels) over half the outline.

    For a band of width w and length L, the mass is w * L and the outline about 2 * L; a faint
    line counts as narrow as it looks.
    """
    _, highest, _, _ = cv2.minMaxLoc(glyph)
    # Framed by a pixel of no ink, so the ink on the image's edges borders the outside too.
    ink = np.zeros((glyph.shape[0] + 2, glyph.shape[1] + 2), dtype=bool)
    ink[1:-1, 1:-1] = glyph > FAINT_INK * highest
    # Changes between neighbours.
    outline = np.count_nonzero(ink[:, 1:] != ink[:, :-1]) + np.count_nonzero(ink[1:] != ink[:-1])
    return cv2.sumElems(glyph)[0] / 255 / max(outline / 2, 1)


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return np.asarray(offsets[:, np.newaxis] ** 2 + offsets**2 <= radius * radius, dtype=np.uint8)


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass, in pixel indices."""
    return _centre_of_mass_from_sums(image.sum(axis=1), image.sum(axis=0))


def _centre_of_mass_from_sums(row_sums: np.ndarray, column_sums: np.ndarray) -> tuple[float, float]:
    mass = float(row_sums.sum())
    row_centre = float(row_sums @ np.arange(row_sums.size)) / mass
    column_centre = float(column_sums @ np.arange(column_sums.size)) / mass
    return row_centre, column_centre


@lru_cache(maxsize=64)
def _ring(shape: tuple[int, int]) -> np.ndarray:
    """The outermost pixels of an image of this shape, as a mask (read-only, shared)."""
    ring = np.zeros(shape, dtype=bool)
    ring[[0, -1]] = ring[:, [0, -1]] = True
    ring.flags.writeable = False
    return ring


def _median(values: np.ndarray) -> float:
    """np.median's value. A full sort of these few values (at most a few thousand) is quicker
    than numpy's partial one, which slows to a crawl on the many equal values of a clean
    background."""
    ordered = np.sort(values, axis=None)
    half = ordered.size // 2
    if ordered.size % 2:
        return float(ordered[half])
    return (float(ordered[half - 1]) + float(ordered[half])) / 2


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
