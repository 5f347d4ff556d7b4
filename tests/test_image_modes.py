"""The same pixels in any image mode give the same answer: a sample of the uploads suite's scans
and photos, reduced to 8-bit gray, saved again as 8-bit L, as 16-bit the ways scanners and
converters widen 8-bit data (x257, x256, 12-bit data in a 16-bit container) and as a float TIFF,
reach the model as the same input to within a grey level or two, and get the same label."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.models import LoadedModel, load_model
from app.preprocess import preprocess
from model.uploads import generate
from tests.conftest import COMMITTED_MODEL

CATEGORIES = ("scanned_paper", "phone_photo", "fine_pen", "thick_marker")
PER_CATEGORY = 6


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _float_tiff(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels / 255).astype(np.float32), mode="F").save(buffer, "TIFF")
    return buffer.getvalue()


# The same 8-bit gray pixels, encoded every way.
WIDENINGS: dict[str, Callable[[np.ndarray], bytes]] = {
    "16-bit x257": lambda gray: _png(gray.astype(np.uint16) * 257),
    "16-bit x256": lambda gray: _png(gray.astype(np.uint16) * 256),
    "12-bit in 16": lambda gray: _png(gray.astype(np.uint16) * 16),
    "float TIFF": _float_tiff,
}


@pytest.fixture(scope="module")
def gray_uploads(digits) -> list[tuple[int, np.ndarray]]:
    """(label, 8-bit gray pixels) of a sample of the suite's uploads."""
    images, labels = digits
    sample = []
    for upload in generate(images, labels, per_category=PER_CATEGORY, categories=CATEGORIES):
        with Image.open(io.BytesIO(upload.data)) as image:
            sample.append((upload.label, np.asarray(image.convert("L"))))
    return sample


@pytest.fixture(scope="module")
def model(compile_cache_dir) -> LoadedModel:
    return load_model(COMMITTED_MODEL, Settings(compile_cache_dir=compile_cache_dir))


@pytest.mark.parametrize("widening", list(WIDENINGS))
def test_wider_modes_give_the_same_input_and_label(gray_uploads, model, widening):
    eight_bit = [preprocess(_png(gray)) for _, gray in gray_uploads]
    wider = [preprocess(WIDENINGS[widening](gray)) for _, gray in gray_uploads]
    for reference, other in zip(eight_bit, wider, strict=True):
        difference = np.abs(reference - other)
        assert float(difference.mean()) <= 1.0
        assert float(np.percentile(difference, 99)) <= 2.0
    labels = model.predict_batch(eight_bit).argmax(axis=1)
    assert np.array_equal(model.predict_batch(wider).argmax(axis=1), labels)
