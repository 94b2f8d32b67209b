"""APTM masked-token objectives: MLM on captions and MAM on attribute prompts.

Facts: aptm §4.3 (MLM: CE at the <= 10 masked positions, mean over the non-ignored positions
of the local batch, labels -100 ignored), §4.5 (MAM: for each prompt with a positive image in
the local batch, one such image uniformly at random; CE averaged over all masked positions of
the selected prompts) and §8.2-§8.3 (per-GPU means as reference-sized groups; MAM computes all
2K prompts with a validity weight, so shapes stay static). The masks themselves come from the
host-side generator in ``reid_jax.text.masking``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from reid_jax.losses.contrastive import _safe_mean
from reid_jax.text.attribute_prompts import prompt_targets

Array = jax.Array

IGNORE_INDEX = -100  # aptm §1.6: label of padded masked positions.


def _token_cross_entropy(logits: Array, labels: Array, weight: Array) -> tuple[Array, Array]:
    """Sum and count of vocabulary CEs over entries with ``labels != -100`` and ``weight``."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    counted = ((labels != IGNORE_INDEX) & weight).astype(jnp.float32)
    return -jnp.sum(picked * counted), jnp.sum(counted)


@functools.partial(jax.jit, static_argnames=("group_size",))
def mlm_loss(logits: Array, labels: Array, *, group_size: int) -> Array:
    """Masked language modelling loss (aptm §4.3), per reference-sized group then averaged.

    Args:
      logits: [B, M, V] float MLM-head logits at the masked positions (M = 10 for captions).
      labels: [B, M] int original token ids, -100 where ignored (padding of the positions).
      group_size: P, the reference per-GPU batch; B must be a multiple of it.

    Returns:
      [] float32 mean over groups of the mean CE over each group's counted positions (a group
      without any counted position contributes 0), reduced.
    """
    batch = labels.shape[0]
    groups = batch // group_size
    logits = logits.reshape(groups, group_size * labels.shape[1], logits.shape[-1])
    labels = labels.reshape(groups, group_size * labels.shape[1])
    per_group = jax.vmap(
        lambda lg, y: _safe_mean(*_token_cross_entropy(lg, y, jnp.ones(y.shape, bool)))
    )(logits, labels)
    return jnp.mean(per_group)


@functools.partial(jax.jit, static_argnames=("group_size",))
def select_mam_images(
    attribute_labels: Array, *, key: Array, group_size: int
) -> tuple[Array, Array]:
    """One positive image per prompt and group for MAM (aptm §4.5, §8.3).

    Within group g, prompt k's image is drawn uniformly among the images b with
    ``Y[b, k] = 1`` (§2.1; unknown labels are never positive), using ``fold_in(key, g)``.
    Prompts without a positive image get the group's first image and ``valid = False``.

    Args:
      attribute_labels: [B, K] int labels in {-1, 0, 1}.
      key: PRNG key for this step and purpose.
      group_size: P, the reference per-GPU batch; B must be a multiple of it.

    Returns:
      image_index: [G, 2K] int32 global index of the image each masked prompt attends to.
      valid: [G, 2K] bool, the prompt had a positive image in its group.
    """
    batch = attribute_labels.shape[0]
    groups = batch // group_size
    positive = (prompt_targets(attribute_labels) == 1).reshape(groups, group_size, -1)

    def one_group(index: Array, group_positive: Array) -> tuple[Array, Array]:
        num_prompts = group_positive.shape[1]
        keys = jax.random.split(jax.random.fold_in(key, index), num_prompts)
        logits = jnp.where(group_positive.T, 0.0, -jnp.inf)  # [2K, P]
        valid = jnp.any(group_positive, axis=0)
        logits = jnp.where(valid[:, None], logits, 0.0)
        local = jax.vmap(jax.random.categorical)(keys, logits)
        local = jnp.where(valid, local, 0)
        return (local + index * group_size).astype(jnp.int32), valid

    return jax.vmap(one_group)(jnp.arange(groups, dtype=jnp.int32), positive)


@jax.jit
def mam_loss(logits: Array, labels: Array, valid: Array) -> Array:
    """Masked attribute-prompt modelling loss (aptm §4.5), per group then averaged.

    All 2K prompts are computed in every group; ``valid`` (from :func:`select_mam_images`)
    removes those without a positive image. A group's loss is the mean CE over the counted
    masked positions of its valid prompts (0 if none).

    Args:
      logits: [G, 2K, M, V] float MLM-head logits at the prompts' masked positions.
      labels: [G, 2K, M] int original prompt token ids, -100 where ignored.
      valid: [G, 2K] bool prompt validity.

    Returns:
      [] float32 mean over groups (reduced).
    """
    weight = jnp.broadcast_to(valid[..., None], labels.shape)
    per_group = jax.vmap(lambda lg, y, w: _safe_mean(*_token_cross_entropy(lg, y, w)))(
        logits, labels, weight
    )
    return jnp.mean(per_group)
