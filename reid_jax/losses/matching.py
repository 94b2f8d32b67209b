"""APTM matching objectives: ITM hard-negative sampling and loss, IAM prompt sampling and loss.

Facts: aptm §4.2 (identity-masked hard negatives drawn from ``softmax(s) + 1e-5`` within each
GPU's sub-batch; 3B pairs, labels 1 then 0), §4.5 (IAM: 5 distinct prompts per GPU, every image
paired with each, targets Y of §2.1, -1 ignored, label smoothing), §8.2 (per-GPU work becomes
reference-sized groups vmapped over a ``[groups, per_group, ...]`` reshape, so nothing depends
on the physical device count) and §8.3 (keys folded with the group index).

Sampling and loss are separate because the model's cross encoder runs between them: the task
module samples indices, gathers the pairs (:func:`itm_pair_indices`), runs the cross encoder and
ITM head, and hands the logits to :func:`itm_loss`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from reid_jax.losses.contrastive import _safe_mean, smoothed_binary_cross_entropy
from reid_jax.text.attribute_prompts import prompt_targets

Array = jax.Array

_SAMPLING_FLOOR = 1e-5  # aptm §4.2: added to the softmax before masking same-identity entries.


def _group_blocks(matrix: Array, group_size: int) -> Array:
    """Diagonal [P, P] blocks of a global [B, B] matrix, as [G, P, P]."""
    groups = matrix.shape[0] // group_size
    blocks = matrix.reshape(groups, group_size, groups, group_size)
    index = jnp.arange(groups)
    return blocks[index, :, index, :]


def _draw_negatives(key: Array, sim: Array, invalid: Array) -> tuple[Array, Array]:
    """One column per row from ``softmax(sim_row) + 1e-5`` with the ``invalid`` columns removed.

    Args:
      key: PRNG key.
      sim: [P, P] float32 similarities of one group.
      invalid: [P, P] bool, same identity.

    Returns:
      (index [P] int32, has_negative [P] bool).
    """
    weights = jax.nn.softmax(sim, axis=-1) + _SAMPLING_FLOOR
    logits = jnp.where(invalid, -jnp.inf, jnp.log(weights))
    has_negative = ~jnp.all(invalid, axis=-1)
    # A row without any other identity would make every logit -inf; draw from zeros instead and
    # flag the row so its pair is dropped from the loss (the reference would crash, §4.2).
    logits = jnp.where(has_negative[:, None], logits, 0.0)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32), has_negative


@functools.partial(jax.jit, static_argnames=("group_size",))
def sample_itm_negatives(
    sim_i2t: Array, sim_t2i: Array, labels: Array, *, key: Array, group_size: int
) -> tuple[Array, Array, Array, Array]:
    """Identity-masked hard negatives within reference-sized groups (aptm §4.2, §8.2, §8.3).

    Group g holds samples ``[g * P, (g + 1) * P)`` (P = ``group_size``). Within the group, each
    image b draws a negative text j with probability proportional to ``softmax_j(sim_i2t[b]) +
    1e-5``, restricted to ``labels[j] != labels[b]`` (never itself or the same person); each
    text draws a negative image from ``sim_t2i`` likewise. Group g uses ``fold_in(key, g)``, so
    a group's draws do not depend on how many groups or devices there are. The similarities
    are detached. A row whose group holds no other identity gets its own index and
    ``valid = False``.

    Args:
      sim_i2t: [B, B] float similarities ``v_b . t_j / tau`` (only diagonal blocks are read).
      sim_t2i: [B, B] float similarities ``t_b . v_j / tau``.
      labels: [B] int identity labels.
      key: PRNG key for this step and purpose.
      group_size: P, the reference per-GPU batch; B must be a multiple of it.

    Returns:
      negative_text_for_image: [B] int32 global index of the text paired with image b.
      negative_image_for_text: [B] int32 global index of the image paired with text b.
      text_valid: [B] bool, image b found a negative text.
      image_valid: [B] bool, text b found a negative image.
    """
    batch = labels.shape[0]
    groups = batch // group_size
    sim_i2t = _group_blocks(jax.lax.stop_gradient(sim_i2t).astype(jnp.float32), group_size)
    sim_t2i = _group_blocks(jax.lax.stop_gradient(sim_t2i).astype(jnp.float32), group_size)
    group_labels = labels.reshape(groups, group_size)

    def one_group(index: Array, s_i2t: Array, s_t2i: Array, ids: Array):
        image_key, text_key = jax.random.split(jax.random.fold_in(key, index))
        same = ids[:, None] == ids[None, :]
        text_index, text_valid = _draw_negatives(image_key, s_i2t, same)
        image_index, image_valid = _draw_negatives(text_key, s_t2i, same)
        own = jnp.arange(group_size, dtype=jnp.int32)
        text_index = jnp.where(text_valid, text_index, own) + index * group_size
        image_index = jnp.where(image_valid, image_index, own) + index * group_size
        return text_index, image_index, text_valid, image_valid

    outputs = jax.vmap(one_group)(
        jnp.arange(groups, dtype=jnp.int32), sim_i2t, sim_t2i, group_labels
    )
    return tuple(x.reshape(batch) for x in outputs)


def itm_pair_indices(
    negative_text_for_image: Array, negative_image_for_text: Array
) -> tuple[Array, Array]:
    """(text, image) indices of the 3B cross-encoder pairs in the order :func:`itm_loss` reads.

    Order (aptm §4.2): B positives ``(T_b, I_b)``, B ``(T_b, I_neg(b))``, B ``(T_neg(b), I_b)``.

    Args:
      negative_text_for_image: [B] int from :func:`sample_itm_negatives`.
      negative_image_for_text: [B] int from :func:`sample_itm_negatives`.

    Returns:
      (text_index [3B] int32, image_index [3B] int32) into the global batch.
    """
    own = jnp.arange(negative_text_for_image.shape[0], dtype=jnp.int32)
    text_index = jnp.concatenate([own, own, negative_text_for_image.astype(jnp.int32)])
    image_index = jnp.concatenate([own, negative_image_for_text.astype(jnp.int32), own])
    return text_index, image_index


@functools.partial(jax.jit, static_argnames=("group_size",))
def itm_loss(
    logits: Array,
    *,
    group_size: int,
    image_valid: Array | None = None,
    text_valid: Array | None = None,
) -> Array:
    """Image-text matching cross-entropy over the 3B pairs, per group then averaged (§4.2).

    Labels are 1 for the B positives and 0 for the 2B negatives. Within each group the loss is
    the mean over its 3P pairs; a negative pair whose row had no valid negative (``valid``
    False) is left out of the mean.

    Args:
      logits: [3B, 2] float ITM-head logits in :func:`itm_pair_indices` order.
      group_size: P, the reference per-GPU batch.
      image_valid: [B] bool validity of ``(T_b, I_neg(b))`` (None: all valid).
      text_valid: [B] bool validity of ``(T_neg(b), I_b)`` (None: all valid).

    Returns:
      [] float32 mean over groups (reduced).
    """
    batch = logits.shape[0] // 3
    groups = batch // group_size
    ones = jnp.ones((batch,), bool)
    valid = jnp.stack(
        [
            ones,
            ones if image_valid is None else image_valid.astype(bool),
            ones if text_valid is None else text_valid.astype(bool),
        ]
    )
    target = jnp.stack([ones, ~ones, ~ones]).astype(jnp.int32)
    logits = logits.reshape(3, groups, group_size, 2).swapaxes(0, 1)
    valid = valid.reshape(3, groups, group_size).swapaxes(0, 1)
    target = target.reshape(3, groups, group_size).swapaxes(0, 1)
    per_group = jax.vmap(
        lambda lg, y, m: _safe_mean(*smoothed_binary_cross_entropy(lg, y, m, label_smoothing=0.0))
    )(logits, target, valid)
    return jnp.mean(per_group)


@functools.partial(jax.jit, static_argnames=("num_prompts", "num_selected", "num_groups"))
def sample_iam_prompts(
    *, key: Array, num_prompts: int, num_groups: int, num_selected: int = 5
) -> Array:
    """Distinct prompts for IAM, drawn uniformly and independently per group (aptm §4.5, §8.3).

    Args:
      key: PRNG key for this step and purpose; group g uses ``fold_in(key, g)``.
      num_prompts: 2K (54 for MALS, 52 for PA-100K).
      num_groups: G = B // group_size.
      num_selected: prompts per group (5 in the reference).

    Returns:
      [G, S] int32 prompt indices, distinct within a row. Image b of group g is paired with
      every prompt of row g (``jnp.repeat(result, group_size, axis=0)`` gives [B, S]).
    """

    def one_group(index: Array) -> Array:
        group_key = jax.random.fold_in(key, index)
        return jax.random.choice(group_key, num_prompts, (num_selected,), replace=False)

    return jax.vmap(one_group)(jnp.arange(num_groups)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("label_smoothing",))
def iam_loss(
    logits: Array, prompt_index: Array, attribute_labels: Array, *, label_smoothing: float = 0.0
) -> Array:
    """Image-attribute matching loss (aptm §4.5), per group then averaged.

    For the s-th selected prompt k of group g, every image b of the group is a pair with target
    ``Y[b, k]`` (§2.1; 1: the image has the stated value); -1 targets are dropped; the prompt's
    loss is the mean over its valid images (0 if none); the group's loss is the mean over its S
    prompts.

    Args:
      logits: [B, S, 2] float ITM-head logits of (image b, prompt ``prompt_index[g(b), s]``).
      prompt_index: [G, S] int from :func:`sample_iam_prompts`; G divides B.
      attribute_labels: [B, K] int labels in {-1, 0, 1}.
      label_smoothing: eps (0.4 for MALS pre-training, 0 for PA-100K).

    Returns:
      [] float32 mean over groups (reduced).
    """
    groups, selected = prompt_index.shape
    batch = logits.shape[0]
    targets = prompt_targets(attribute_labels).reshape(groups, batch // groups, -1)
    logits = logits.reshape(groups, batch // groups, selected, 2)

    def one_group(group_logits: Array, group_targets: Array, chosen: Array) -> Array:
        chosen_targets = group_targets[:, chosen]  # [P, S]
        per_prompt = jax.vmap(
            lambda lg, y: _safe_mean(
                *smoothed_binary_cross_entropy(lg, y, y >= 0, label_smoothing=label_smoothing)
            ),
            in_axes=(1, 1),
        )(group_logits, chosen_targets)
        return jnp.mean(per_prompt)

    return jnp.mean(jax.vmap(one_group)(logits, targets, prompt_index))
