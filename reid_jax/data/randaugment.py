"""APTM's image augmentation (aptm §1.4): RandAugment at level 7 and random erasing, NumPy/PIL.

The reference draws 2 of 10 operations uniformly with replacement and applies each with
probability 0.5, at a fixed magnitude (level 7 of 10):

    Identity, AutoContrast, Equalize, Brightness x1.36, Sharpness 1.36, ShearX/ShearY +-0.21,
    TranslateX/TranslateY +-7 px, Rotate +-21 deg (signs random, fill (128, 128, 128)).

Sharpness blends with a 3x3 smoothing (all ones, centre 5, / 13) on interior pixels; the
reference casts to uint8 without clipping (overflow), this port clips (aptm §8.6 item 15).
Random erasing (p = 0.6) runs after normalisation and writes 0 there (= the mean colour).

Every draw comes from the caller's `numpy.random.Generator` (keyed by seed, epoch, record),
so augmentation resumes exactly; it is not the reference's Python `random` stream.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps

FILL = (128, 128, 128)
NUM_OPS = 2  # operations drawn per image
OP_PROBABILITY = 0.5
BRIGHTNESS = 1.36  # the level-7 factors as tabulated in aptm §1.4
SHARPNESS = 1.36
SHEAR = 0.21
TRANSLATE = 7
ROTATE = 21.0


def _auto_contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel linear stretch of [min, max] to [0, 255] (channels with max == min kept)."""
    del rng
    out = image.astype(np.float32)
    low = out.min(axis=(0, 1), keepdims=True)
    high = out.max(axis=(0, 1), keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    stretched = np.where(high > low, (out - low) * (255.0 / span), out)
    return np.clip(stretched, 0, 255).astype(np.uint8)


def _equalize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return np.asarray(ImageOps.equalize(Image.fromarray(image)))


def _brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return np.clip(image.astype(np.float32) * BRIGHTNESS, 0, 255).astype(np.uint8)


def _sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`smooth + 1.36 (img - smooth)` on interior pixels, smoothing kernel ones/centre 5 / 13."""
    del rng
    x = image.astype(np.float32)
    padded_sum = np.zeros_like(x[1:-1, 1:-1])
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            padded_sum += x[dy : dy + x.shape[0] - 2, dx : dx + x.shape[1] - 2]
    smooth = (padded_sum + 4.0 * x[1:-1, 1:-1]) / 13.0
    out = x.copy()
    out[1:-1, 1:-1] = smooth + SHARPNESS * (x[1:-1, 1:-1] - smooth)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _affine(image: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """PIL affine (output pixel (x, y) samples input at (a x + b y + c, d x + e y + f))."""
    pil = Image.fromarray(image)
    out = pil.transform(
        pil.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR, fillcolor=FILL
    )
    return np.asarray(out)


def _shear_x(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(image, (1.0, _sign(rng) * SHEAR, 0.0, 0.0, 1.0, 0.0))


def _shear_y(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(image, (1.0, 0.0, 0.0, _sign(rng) * SHEAR, 1.0, 0.0))


def _translate_x(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(image, (1.0, 0.0, _sign(rng) * TRANSLATE, 0.0, 1.0, 0.0))


def _translate_y(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, _sign(rng) * TRANSLATE))


def _rotate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation about the image centre, bilinear, grey fill."""
    angle = _sign(rng) * ROTATE
    pil = Image.fromarray(image)
    return np.asarray(pil.rotate(angle, Image.Resampling.BILINEAR, fillcolor=FILL))


def _identity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return image


OPERATIONS = (
    ("Identity", _identity),
    ("AutoContrast", _auto_contrast),
    ("Equalize", _equalize),
    ("Brightness", _brightness),
    ("Sharpness", _sharpness),
    ("ShearX", _shear_x),
    ("ShearY", _shear_y),
    ("TranslateX", _translate_x),
    ("TranslateY", _translate_y),
    ("Rotate", _rotate),
)


def rand_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """APTM RandAugment: 2 operations drawn with replacement, each applied with p = 0.5.

    Args:
      image: uint8 [H, W, 3].
      rng: NumPy generator.

    Returns:
      uint8 [H, W, 3].
    """
    for op_index in rng.integers(0, len(OPERATIONS), NUM_OPS):
        if rng.random() < OP_PROBABILITY:
            image = OPERATIONS[int(op_index)][1](image, rng)
    return image


def random_erasing(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    probability: float = 0.6,
    area: tuple[float, float] = (0.02, 0.4),
    min_aspect: float = 0.3,
    attempts: int = 100,
) -> np.ndarray:
    """Random erasing on a normalised image (aptm §1.4 step 6): the box becomes 0.

    Area fraction ~ U(area), aspect ratio r ~ U(min_aspect, 1 / min_aspect),
    h = round(sqrt(area r)), w = round(sqrt(area / r)); accepted when h < H and w < W, top-left
    uniform; up to `attempts` tries.

    Args:
      image: float32 [H, W, C] normalised image (modified copy returned).
      rng: NumPy generator.
      probability: chance of erasing at all (0.6).
      area: range of the erased fraction of H * W.
      min_aspect: lower aspect-ratio bound.
      attempts: tries before giving up.

    Returns:
      float32 [H, W, C].
    """
    if rng.random() >= probability:
        return image
    height, width = image.shape[:2]
    for _ in range(attempts):
        target = rng.uniform(*area) * height * width
        ratio = rng.uniform(min_aspect, 1.0 / min_aspect)
        h = int(round(math.sqrt(target * ratio)))
        w = int(round(math.sqrt(target / ratio)))
        if h < height and w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            image = image.copy()
            image[top : top + h, left : left + w] = 0.0
            return image
    return image
