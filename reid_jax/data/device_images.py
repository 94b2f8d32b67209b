"""Training images arrive on the device as uint8; normalisation and flips happen in the step.

A train loader that emits `image` uint8 [B, H, W, 3] (and optionally `flip` bool [B], the
augmentation's left-right decision, drawn on the host exactly as before) moves a quarter of
the bytes across worker processes and host -> device, and leaves the arithmetic to the
compiled step. `model_images` reproduces the host path bit for bit: the same float32 lookup
table as `transforms.normalize` (built on the host with NumPy, gathered on the device), and
a mirror, which commutes exactly with PIL's bicubic resize (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from reid_jax.data import transforms


def model_images(
    images: jax.Array,
    flip: jax.Array | None,
    mean: Sequence[float],
    std: Sequence[float],
) -> jax.Array:
    """uint8 images -> the model's float32 input.

    Args:
      images: uint8 [B, H, W, 3].
      flip: bool [B] (mirror left-right where True) or None.
      mean, std: per-channel normalisation of the [0, 1] image.

    Returns:
      float32 [B, H, W, 3], equal to the host transform's output.
    """
    table = jnp.asarray(transforms.normalisation_table(mean, std))
    x = table[images.astype(jnp.int32), jnp.arange(3)]
    if flip is not None:
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return x


def prepare_batch(batch: dict[str, jax.Array], task, config) -> dict[str, jax.Array]:
    """The batch a task's objective sees: a uint8 `image` becomes the model input through the
    task's `image_normalisation(config)` (and `flip`, dropped afterwards); other batches pass
    unchanged (the dtype is known when the step is traced)."""
    if "image" not in batch or batch["image"].dtype != jnp.uint8:
        return batch
    mean, std = task.image_normalisation(config)
    out = {k: v for k, v in batch.items() if k != "flip"}
    out["image"] = model_images(batch["image"], batch.get("flip"), mean, std)
    return out
