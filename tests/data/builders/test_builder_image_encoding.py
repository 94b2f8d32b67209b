"""Tests for the builders' image bytes: RGB JPEG/PNG pass through, the rest becomes RGB PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reid_jax.data.builders.image_encoding import rgb_image_bytes
from reid_jax.data.errors import DatasetFormatError


def _save(path, array, mode=None, **kwargs):
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(12, 6, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, mode", [("rgb.jpg", None), ("rgb.png", None)])
def test_rgb_files_pass_through(tmp_path, pixels, name, mode):
    path = _save(tmp_path / name, pixels, mode)
    assert rgb_image_bytes(str(path), source="ann.json", record=0) == path.read_bytes()


@pytest.mark.parametrize(
    "name, mode",
    [
        ("grey.jpg", "L"),
        ("palette.png", "P"),
        ("alpha.png", "RGBA"),
        ("cmyk.jpg", "CMYK"),
        ("rgb.bmp", None),
    ],
)
def test_other_images_become_lossless_rgb_png(tmp_path, pixels, name, mode):
    path = _save(tmp_path / name, pixels, mode)
    data = rgb_image_bytes(str(path), source="ann.json", record=3)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        got = np.asarray(decoded)
    with Image.open(path) as original:
        want = np.asarray(original.convert("RGB"))
    np.testing.assert_array_equal(got, want)


def test_broken_image_names_file_record_and_field(tmp_path, pixels):
    path = _save(tmp_path / "cut.jpg", pixels)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetFormatError, match=r"ann.json, record 7, field 'image'.*cut.jpg"):
        rgb_image_bytes(str(path), source="ann.json", record=7)
    with pytest.raises(DatasetFormatError, match="missing.jpg"):
        rgb_image_bytes(str(tmp_path / "missing.jpg"), source="ann.json", record=0)
