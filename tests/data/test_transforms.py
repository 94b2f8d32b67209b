"""Tests for reid_jax.data.transforms against direct PIL / NumPy computations."""

import numpy as np
import pytest
from PIL import Image

from reid_jax.data import transforms
from reid_jax.data.errors import DatasetFormatError


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 15, 3), dtype=np.uint8)


def _pil_normalised(image, size, mean, std, flip=False):
    """Independent reference: PIL flip + bicubic resize, then (x / 255 - mean) / std."""
    pil = Image.fromarray(image)
    if flip:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pil = pil.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    x = np.asarray(pil).astype(np.float64) / 255.0
    return ((x - np.asarray(mean)) / np.asarray(std)).astype(np.float32)


def test_load_rgb_converts_modes(tmp_path):
    gray = np.arange(20 * 10, dtype=np.uint8).reshape(20, 10)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = transforms.load_rgb(tmp_path / "g.png")
    assert out.shape == (20, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(transforms.load_rgb(str(tmp_path / "a.png"))[..., 0], 200)


def test_load_rgb_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        transforms.load_rgb(missing)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a jpeg")
    with pytest.raises(DatasetFormatError, match="broken.jpg"):
        transforms.load_rgb(broken)


def test_resize_bicubic_matches_pil(photo):
    out = transforms.resize_bicubic(photo, (24, 8))
    ref = np.asarray(Image.fromarray(photo).resize((8, 24), Image.Resampling.BICUBIC))
    assert out.shape == (24, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)


def _bilinear_reference(image, size):
    """Per-pixel half-pixel-centred bilinear interpolation with edge clamping."""
    h, w = image.shape[:2]
    out = np.zeros((*size, 3))
    for oy in range(size[0]):
        sy = min(max((oy + 0.5) * h / size[0] - 0.5, 0.0), h - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for ox in range(size[1]):
            sx = min(max((ox + 0.5) * w / size[1] - 0.5, 0.0), w - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
            bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
            out[oy, ox] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize("size", [(20, 9), (50, 31), (37, 15)])
def test_resize_bilinear_matches_reference(photo, size):
    out = transforms.resize_bilinear(photo, size)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    ref = _bilinear_reference(photo.astype(np.float64), size)
    assert np.abs(out.astype(np.float64) - ref).max() <= 0.5 + 1e-3
    if size == photo.shape[:2]:
        assert out is photo  # already the right size: untouched


def test_flip_and_normalize(photo):
    np.testing.assert_array_equal(transforms.horizontal_flip(photo), photo[:, ::-1])
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = transforms.normalize(photo, mean, std)
    assert out.dtype == np.float32
    ref = (photo / 255.0 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    uniform = transforms.normalize(photo, (0.5,) * 3, (0.5,) * 3)  # single-table path
    np.testing.assert_allclose(uniform, photo / 127.5 - 1.0, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        transforms.normalize(photo.astype(np.float32), mean, std)


def test_ssan_transforms_match_pil(photo):
    size = (24, 8)
    test_out = transforms.ssan_test_transform(photo, image_size=size)
    ref = _pil_normalised(photo, size, (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_allclose(test_out, ref, atol=1e-5)
    flips = set()
    for seed in range(12):
        flip = np.random.default_rng(seed).random() < 0.5  # the transform's single draw
        out = transforms.ssan_train_transform(
            photo, image_size=size, rng=np.random.default_rng(seed)
        )
        ref = _pil_normalised(photo, size, (0.5,) * 3, (0.5,) * 3, flip=flip)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
        flips.add(flip)
    assert flips == {True, False}


def test_ssan_uint8_path_equals_the_host_transform_bit_for_bit(photo):
    """The loader's uint8 half (resize + the same flip draw) then the step's half (mirror +
    normalise on the device) give exactly `ssan_train_transform`'s output."""
    from reid_jax.data import device_images

    rng = np.random.default_rng(5)
    flips = set()
    for seed in range(12):
        image = photo if seed < 6 else rng.integers(0, 256, (37 + seed, 19, 3), dtype=np.uint8)
        host = transforms.ssan_train_transform(
            image, image_size=(24, 8), rng=np.random.default_rng(seed)
        )
        resized, flip = transforms.ssan_train_resize(
            image, image_size=(24, 8), rng=np.random.default_rng(seed)
        )
        assert resized.dtype == np.uint8
        device = device_images.model_images(
            resized[None], np.asarray([flip]), transforms.SSAN_MEAN, transforms.SSAN_STD
        )
        np.testing.assert_array_equal(np.asarray(device)[0], host)
        flips.add(bool(flip))
    assert flips == {True, False}


@pytest.mark.parametrize("crop_prob", [0.0, 0.7])
def test_alignedreid_uint8_path_equals_the_host_transform(photo, crop_prob):
    from reid_jax.data import device_images

    flips = set()
    for seed in range(10):
        kwargs = dict(image_size=(20, 9), crop_prob=crop_prob, crop_ratio=0.6)
        host = transforms.alignedreid_train_transform(
            photo, rng=np.random.default_rng(seed), **kwargs
        )
        resized, flip = transforms.alignedreid_train_resize(
            photo, rng=np.random.default_rng(seed), **kwargs
        )
        mean, std = transforms.ALIGNEDREID_MEAN, transforms.ALIGNEDREID_STD
        device = device_images.model_images(resized[None], np.asarray([flip]), mean, std)
        np.testing.assert_array_equal(np.asarray(device)[0], host)
        flips.add(bool(flip))
    assert flips == {True, False}


def test_pad_crop_flip_uint8_path_equals_flip_pad_crop(photo):
    """Reference order (attribute_reid §3.6): resize, flip, zero-pad, crop at (top, left),
    normalise; the uint8 path crops the unflipped image at the mirrored offset and the
    device mirrors and normalises."""
    from reid_jax.data import device_images

    size, padding = (20, 9), 3
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        flip = rng.random() < 0.5
        top, left = (int(rng.integers(0, 2 * padding + 1)) for _ in range(2))
        resized = transforms.resize_bilinear(photo, size)
        mirrored = resized[:, ::-1] if flip else resized
        padded = np.pad(mirrored, ((padding, padding), (padding, padding), (0, 0)))
        window = padded[top : top + size[0], left : left + size[1]]
        reference = transforms.normalize(window, transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)

        kwargs = dict(image_size=size, padding=padding)
        host = transforms.pad_crop_flip_train_transform(
            photo, rng=np.random.default_rng(seed), **kwargs
        )
        crop, device_flip = transforms.pad_crop_train_resize(
            photo, rng=np.random.default_rng(seed), **kwargs
        )
        device = device_images.model_images(
            crop[None], np.asarray([device_flip]), transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
        )
        assert bool(device_flip) == flip
        np.testing.assert_array_equal(host, reference)
        np.testing.assert_array_equal(np.asarray(device)[0], reference)
        flips.add(flip)
    assert flips == {True, False}


def test_alignedreid_train_transform_order(photo):
    size = (20, 9)
    mean, std = (0.486, 0.459, 0.408), (0.229, 0.224, 0.225)
    for seed in range(6):
        flip = np.random.default_rng(seed).random() < 0.5  # no crop draw at crop_prob=0
        out = transforms.alignedreid_train_transform(
            photo, image_size=size, rng=np.random.default_rng(seed)
        )
        ref = (
            _bilinear_reference(photo.astype(np.float64), size).round() / 255.0 - np.asarray(mean)
        ) / np.asarray(std)
        if flip:
            ref = ref[:, ::-1]
        # One grey level of slack: x.5 ties may round either way in float32 vs float64.
        np.testing.assert_allclose(out, ref, atol=1.01 / (255 * 0.224))
    test_out = transforms.alignedreid_test_transform(photo, image_size=photo.shape[:2])
    np.testing.assert_allclose(test_out, (photo / 255.0 - mean) / np.asarray(std), atol=1e-5)


def test_random_crop(photo):
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert transforms.random_crop(photo, crop_prob=0.0, crop_ratio=0.5, rng=rng) is photo
    assert rng.bit_generator.state == state  # disabled crop consumes no randomness
    for seed in range(10):
        crop = transforms.random_crop(
            photo, crop_prob=1.0, crop_ratio=0.5, rng=np.random.default_rng(seed)
        )
        h, w = crop.shape[:2]
        assert 0.5 * 37 - 1 <= h <= 37 and 0.5 * 15 - 1 <= w <= 15
        # The crop is a window of the original image.
        hits = [
            (t, left)
            for t in range(37 - h + 1)
            for left in range(15 - w + 1)
            if np.array_equal(photo[t : t + h, left : left + w], crop)
        ]
        assert hits
