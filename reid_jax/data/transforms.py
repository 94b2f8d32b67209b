"""Host image operations with PIL/NumPy: decode, resize, flip, normalise, per-method transforms.

All images are HWC. Decoded images are uint8 [h, w, 3] RGB; model inputs are float32
[H, W, 3]. Randomness comes only from an explicit `np.random.Generator` argument, so a
pipeline that keys its generator by (seed, epoch, index) augments reproducibly.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from reid_jax.data import image_locations
from reid_jax.data.errors import DatasetFormatError

SSAN_MEAN = (0.5, 0.5, 0.5)
SSAN_STD = (0.5, 0.5, 0.5)
# alignedreid §1.1: the re-production's mean (not the usual ImageNet 0.485/0.456/0.406).
ALIGNEDREID_MEAN = (0.486, 0.459, 0.408)
ALIGNEDREID_STD = (0.229, 0.224, 0.225)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file, or an image stored in a prepared dataset, to RGB.

    Args:
      path: image file, or an image location `tfds://<name>/<split>/<i>@<data_dir>`
        (`reid_jax.data.image_locations`): its stored bytes are decoded the same way.

    Returns:
      uint8 [h, w, 3] RGB array (grayscale / RGBA / palette inputs are converted).

    Raises:
      FileNotFoundError: the file (or stored image) does not exist (message names the path).
      DatasetFormatError: the file cannot be decoded (names the path).
    """
    path = os.fspath(path)
    try:
        if image_locations.is_location(path):
            source = io.BytesIO(image_locations.read_image_bytes(path))
        else:
            source = path
        with Image.open(source) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        if image_locations.is_location(path):
            raise
        raise FileNotFoundError(f"{path}: image file not found") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DatasetFormatError(path, f"cannot decode image ({error})", field="image") from error


def resize_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes with PIL bicubic (anti-aliased when shrinking), aspect ratio not preserved.

    Args:
      image: uint8 [h, w, 3].
      size: (H, W) target height and width.

    Returns:
      uint8 [H, W, 3].
    """
    height, width = size
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel-centred linear interpolation (OpenCV style)."""
    scale = in_size / out_size
    source = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    source = np.clip(source, 0.0, in_size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (source - low).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes with OpenCV `INTER_LINEAR` semantics (half-pixel centres, no anti-aliasing).

    OpenCV rounds through 11-bit fixed-point weights, so results may differ from cv2 by one
    grey level; this uses float weights and rounds once at the end (alignedreid §1.1 step 3).

    Args:
      image: uint8 [h, w, 3].
      size: (H, W).

    Returns:
      uint8 [H, W, 3].
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    y0, y1, wy = _linear_taps(image.shape[0], height)
    x0, x1, wx = _linear_taps(image.shape[1], width)
    pixels = image.astype(np.float32)
    rows = pixels[y0] * (1.0 - wy)[:, None, None] + pixels[y1] * wy[:, None, None]
    out = rows[:, x0] * (1.0 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def horizontal_flip(image: np.ndarray) -> np.ndarray:
    """Mirrors left-right.

    Args:
      image: [h, w, C] array.

    Returns:
      [h, w, C] array (a contiguous copy).
    """
    return np.ascontiguousarray(image[:, ::-1])


def normalisation_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 [256, 3]: row v = (v / 255 - mean) / std, as `x * scale - shift` in float32
    (shared by `normalize` and the device-side `device_images.model_images`)."""
    std = np.asarray(std, np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (np.asarray(mean, np.float32) / std).astype(np.float32)
    return np.arange(256, dtype=np.float32)[:, None] * scale - shift


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Scales uint8 to [0, 1], then standardises per channel: `(x / 255 - mean) / std`.

    Implemented as a 256-entry float32 lookup table per channel (`x * scale - shift` in
    float32, the same arithmetic as the direct formula), about 3x faster than converting and
    broadcasting.

    Args:
      image: uint8 [H, W, 3].
      mean: 3 per-channel means (of the [0, 1] image).
      std: 3 per-channel standard deviations.

    Returns:
      float32 [H, W, 3].
    """
    if image.dtype != np.uint8:
        raise TypeError(f"normalize expects a uint8 image, got {image.dtype}")
    table = normalisation_table(mean, std)
    if np.all(table == table[:, :1]):
        return np.take(table[:, 0], image)
    out = np.empty(image.shape, np.float32)
    for channel in range(image.shape[-1]):
        np.take(table[:, channel], image[..., channel], out=out[..., channel])
    return out


def ssan_train_transform(
    image: np.ndarray, *, image_size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """SSAN training transform (ssan §1.5): flip p=0.5 -> PIL bicubic resize -> 0.5/0.5 norm.

    Args:
      image: uint8 [h, w, 3].
      image_size: (H, W), 384 x 128 in the paper.
      rng: the one draw (flip) comes from here.

    Returns:
      float32 [H, W, 3] in [-1, 1].
    """
    pil = Image.fromarray(image)
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # PIL flips ~8x faster than NumPy
    resized = np.asarray(pil.resize((image_size[1], image_size[0]), Image.Resampling.BICUBIC))
    return normalize(resized, SSAN_MEAN, SSAN_STD)


def ssan_train_resize(
    image: np.ndarray, *, image_size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.bool_]:
    """The host half of `ssan_train_transform` for the uint8 path: the resize and the flip
    decision (the same draw); mirroring then normalising the result (`data.device_images`)
    gives `ssan_train_transform`'s output exactly (PIL's bicubic resize commutes with a
    mirror).

    Returns:
      (uint8 [H, W, 3] resized, unflipped; bool flip).
    """
    flip = np.bool_(rng.random() < 0.5)
    return resize_bicubic(image, tuple(image_size)), flip


def ssan_test_transform(image: np.ndarray, *, image_size: tuple[int, int]) -> np.ndarray:
    """SSAN test transform (ssan §1.5): PIL bicubic resize -> 0.5/0.5 normalisation.

    Args:
      image: uint8 [h, w, 3].
      image_size: (H, W).

    Returns:
      float32 [H, W, 3].
    """
    return normalize(resize_bicubic(image, image_size), SSAN_MEAN, SSAN_STD)


def random_crop(
    image: np.ndarray, *, crop_prob: float, crop_ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Optional random crop of alignedreid §1.1 step 2.

    With probability `crop_prob` draw height and width ratios uniformly in [crop_ratio, 1]
    and cut a window of that size at a uniformly random position. With `crop_prob == 0`
    (the default configuration) no random number is consumed.

    Args:
      image: uint8 [h, w, 3].
      crop_prob: probability of cropping.
      crop_ratio: smallest side ratio in (0, 1].
      rng: generator.

    Returns:
      uint8 [h', w', 3] with h' <= h, w' <= w.
    """
    if crop_prob <= 0 or rng.random() >= crop_prob:
        return image
    h, w = image.shape[:2]
    crop_h = max(1, int(round(h * rng.uniform(crop_ratio, 1.0))))
    crop_w = max(1, int(round(w * rng.uniform(crop_ratio, 1.0))))
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    return image[top : top + crop_h, left : left + crop_w]


def alignedreid_train_transform(
    image: np.ndarray,
    *,
    image_size: tuple[int, int],
    rng: np.random.Generator,
    crop_prob: float = 0.0,
    crop_ratio: float = 1.0,
) -> np.ndarray:
    """AlignedReID training transform (alignedreid §1.1), in the re-production's order.

    Optional random crop -> bilinear resize (OpenCV semantics; skipped if already H x W) ->
    /255 -> normalise with mean (0.486, 0.459, 0.408), std (0.229, 0.224, 0.225) ->
    horizontal flip with p = 0.5.

    Args:
      image: uint8 [h, w, 3].
      image_size: (H, W), 256 x 128 in the re-production.
      rng: generator for the crop (if enabled) and the flip.
      crop_prob: random-crop probability (0 = disabled, the default).
      crop_ratio: smallest crop side ratio.

    Returns:
      float32 [H, W, 3].
    """
    resized, flip = alignedreid_train_resize(
        image, image_size=image_size, rng=rng, crop_prob=crop_prob, crop_ratio=crop_ratio
    )
    out = normalize(resized, ALIGNEDREID_MEAN, ALIGNEDREID_STD)
    return horizontal_flip(out) if flip else out


def alignedreid_train_resize(
    image: np.ndarray,
    *,
    image_size: tuple[int, int],
    rng: np.random.Generator,
    crop_prob: float = 0.0,
    crop_ratio: float = 1.0,
) -> tuple[np.ndarray, np.bool_]:
    """The host half of `alignedreid_train_transform` for the uint8 path: crop and resize,
    and the flip decision (the same draws in the same order); normalising then mirroring
    (`data.device_images`) gives the transform's output exactly.

    Returns:
      (uint8 [H, W, 3], bool flip).
    """
    image = random_crop(image, crop_prob=crop_prob, crop_ratio=crop_ratio, rng=rng)
    resized = resize_bilinear(image, image_size)
    return resized, np.bool_(rng.random() < 0.5)


def alignedreid_test_transform(image: np.ndarray, *, image_size: tuple[int, int]) -> np.ndarray:
    """AlignedReID test transform: bilinear resize -> /255 -> normalise (no flip, no crop).

    Args:
      image: uint8 [h, w, 3].
      image_size: (H, W).

    Returns:
      float32 [H, W, 3].
    """
    return normalize(resize_bilinear(image, image_size), ALIGNEDREID_MEAN, ALIGNEDREID_STD)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pad_crop_flip_train_transform(
    image: np.ndarray, *, image_size: tuple[int, int], rng: np.random.Generator, padding: int = 10
) -> np.ndarray:
    """The usual re-id training transform (attribute_reid §3.6): bilinear resize -> flip with
    p = 0.5 -> zero-pad `padding` pixels on every side and crop H x W back at a uniformly
    random offset -> ImageNet normalisation (the padding is black before normalising).

    Args:
      image: uint8 [h, w, 3].
      image_size: (H, W).
      rng: three draws per image (flip, top, left).
      padding: pixels added on each side (0 = no crop).

    Returns:
      float32 [H, W, 3].
    """
    cropped, flip = pad_crop_train_resize(image, image_size=image_size, rng=rng, padding=padding)
    return normalize(horizontal_flip(cropped) if flip else cropped, IMAGENET_MEAN, IMAGENET_STD)


def pad_crop_train_resize(
    image: np.ndarray, *, image_size: tuple[int, int], rng: np.random.Generator, padding: int = 10
) -> tuple[np.ndarray, np.bool_]:
    """The host half of `pad_crop_flip_train_transform` for the uint8 path (same draws):
    the unflipped window whose mirror is the transform's window. Mirroring the zero-padded
    image and cropping at column `left` equals cropping the unmirrored one at
    `2 * padding - left` and mirroring the crop, so the flip can wait for the device.

    Returns:
      (uint8 [H, W, 3], bool flip).
    """
    resized = resize_bilinear(image, image_size)
    flip = np.bool_(rng.random() < 0.5)
    top, left = (int(rng.integers(0, 2 * padding + 1)) for _ in range(2))
    if not padding:
        return resized, flip
    if flip:
        left = 2 * padding - left
    padded = np.pad(resized, ((padding, padding), (padding, padding), (0, 0)))
    return padded[top : top + image_size[0], left : left + image_size[1]], flip


def imagenet_test_transform(image: np.ndarray, *, image_size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize -> ImageNet normalisation (the test side of
    `pad_crop_flip_train_transform`)."""
    return normalize(resize_bilinear(image, image_size), IMAGENET_MEAN, IMAGENET_STD)
