"""Rendering: shapes, determinism, colours surviving the camera shift, visibility in pixels."""

import dataclasses

import numpy as np
import pytest

from reid_jax.data.synthetic.attributes import (
    COLOUR_RGB,
    SHADES,
    UPPER_COLOURS,
    sample_identity,
)
from reid_jax.data.synthetic.render import camera_looks, render_image
from reid_jax.data.synthetic.scene import NUM_CAMERAS, sample_scene

SIZE = (128, 64)


@pytest.fixture(scope="module")
def looks():
    return camera_looks(0)


def _plain(ident, **changes):
    """The identity without anything that covers the middle of the torso."""
    plain = dict(
        stripes=False, logo=False, bag=False, backpack=False, long_hair=False, handbag=False
    )
    return dataclasses.replace(ident, **{**plain, **changes})


def _clean_scene(ident, camera, seed, **changes):
    scene = sample_scene(np.random.default_rng(seed), ident, camera, view="front", mirror=False)
    return dataclasses.replace(
        scene, occluder=None, neighbour=None, noise_sigma=0.0, blur=0.0, **changes
    )


def _torso_mean(pixels, scene):
    h, w = pixels.shape[:2]
    top, p = scene.top_y * h, scene.scale * h
    cx = scene.center_x * w
    rows = slice(int(top + 0.24 * p), int(top + 0.38 * p))
    cols = slice(int(cx - 0.03 * p), int(cx + 0.03 * p) + 1)
    return pixels[rows, cols].reshape(-1, 3).mean(0)


def _variants():
    """Every (colour, shade) an identity can wear, as RGB: light = 30 % white, dark = x0.65."""
    out = []
    for name, shades in SHADES.items():
        base = np.asarray(COLOUR_RGB[name], float)
        for shade in shades:
            rgb = {"light": 0.7 * base + 76.5, "dark": 0.65 * base, "normal": base}[shade]
            out.append((name, rgb))
    return out


def test_shape_dtype_and_determinism(looks):
    ident = sample_identity(np.random.default_rng(0))
    scene = sample_scene(np.random.default_rng(1), ident, 2)
    a = render_image(ident, scene, SIZE, looks, np.random.default_rng(5))
    b = render_image(ident, scene, SIZE, looks, np.random.default_rng(5))
    c = render_image(ident, scene, SIZE, looks, np.random.default_rng(6))
    assert a.shape == (128, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1.0  # other background and noise
    big = render_image(ident, scene, (384, 128), looks, np.random.default_rng(5))
    assert big.shape == (384, 128, 3)
    empty = render_image(None, scene, SIZE, looks, np.random.default_rng(5))
    assert empty.shape == (128, 64, 3)


def test_upper_colour_survives_every_camera(looks):
    variants = _variants()
    hits = total = 0
    for i in range(60):
        ident = _plain(sample_identity(np.random.default_rng([11, i])))
        for camera in range(1, NUM_CAMERAS + 1):
            scene = _clean_scene(ident, camera, [12, i, camera])
            pixels = render_image(ident, scene, SIZE, looks, np.random.default_rng(0))
            mean = _torso_mean(pixels.astype(float), scene)
            nearest = min(variants, key=lambda v: np.linalg.norm(v[1] - mean))[0]
            hits += nearest == ident.upper_colour
            total += 1
    assert hits / total >= 0.95, hits / total


def test_camera_shift_changes_colours(looks):
    ident = _plain(sample_identity(np.random.default_rng(3)))
    means = []
    for camera in (0, 1, 2):
        scene = _clean_scene(ident, camera, 4)
        pixels = render_image(ident, scene, SIZE, looks, np.random.default_rng(0))
        means.append(_torso_mean(pixels.astype(float), scene))
    # Camera 0 is neutral: the torso shows the identity's own colour.
    np.testing.assert_allclose(means[0], ident.upper_rgb, atol=3.0)
    assert np.abs(means[1] - means[2]).max() > 2.0


def test_backpack_covers_the_back_not_the_front(looks):
    ident = _plain(
        sample_identity(np.random.default_rng(21)),
        upper_colour="white",
        upper_rgb=COLOUR_RGB["white"],
        backpack=True,
        backpack_colour="red",
    )
    colours = {}
    for view in ("front", "back"):
        scene = _clean_scene(ident, 0, 22, view=view)
        pixels = render_image(ident, scene, SIZE, looks, np.random.default_rng(0))
        colours[view] = _torso_mean(pixels.astype(float), scene)
    red, white = np.asarray(COLOUR_RGB["red"], float), np.asarray(COLOUR_RGB["white"], float)
    assert np.linalg.norm(colours["front"] - white) < np.linalg.norm(colours["front"] - red)
    assert np.linalg.norm(colours["back"] - red) < np.linalg.norm(colours["back"] - white)


def test_palette_colours_are_far_apart():
    rgb = np.asarray([COLOUR_RGB[c] for c in UPPER_COLOURS], float)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + 1e9 * np.eye(len(rgb))
    assert dist.min() > 80
