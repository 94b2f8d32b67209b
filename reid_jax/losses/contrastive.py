"""APTM contrastive objectives: identity-aware ITC, IAC, and the loss mixes of aptm §4.6.

Facts: aptm §4.1 (ITC over the gathered batch with soft targets uniform over same-identity
pairs), §4.4 (EDA twin terms, weight 0.8), §4.5 (IAC: 2-way prompt logits per attribute, label
smoothing, -1 ignored, empty attributes count as 0), §4.6 (stage mixes), §8.1 (the reference's
1/W encoder gradient) and §8.2 (per-GPU terms as groups, vmapped).

ITC is written on the *global* arrays: under ``jax.jit`` on a data-parallel mesh the batch is
sharded on axis 0 and XLA inserts the gathers, and their transposes give the true gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST
GRADIENT_SCALES = ("global", "per_device_emulation")


def scale_gradient(x: Array, scale: float) -> Array:
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` (aptm §8.1).

    ``sg(x) + scale * (x - sg(x))`` has the value of ``x`` and the derivative ``scale``.

    Args:
      x: any float array.
      scale: static Python float.

    Returns:
      array equal to ``x``.
    """
    frozen = jax.lax.stop_gradient(x)
    return frozen + scale * (x - frozen)


@functools.partial(jax.jit, static_argnames=("gradient_scale", "num_reference_devices"))
def itc_loss(
    image_feats: Array,
    text_feats: Array,
    labels: Array,
    temperature: Array,
    *,
    gradient_scale: str = "global",
    num_reference_devices: int = 4,
) -> Array:
    """Identity-aware image-text contrastive loss over the global batch (aptm §4.1, §8.1).

    ``S = V T^T / tau``; soft targets ``Q_ij = 1[id_i = id_j] / #{k: id_k = id_i}``;
    ``L = (CE_rows(S, Q) + CE_cols(S, Q)) / 2`` with each CE averaged over the N rows/columns.
    There is no padding in training batches (drop_remainder), so every row counts.

    ``gradient_scale="global"`` (default) is the true gradient of ``L``. ``"per_device_emulation"``
    reproduces the reference on ``W = num_reference_devices`` GPUs: its all-gather backward keeps
    only the local slice of each GPU's (identical) loss gradient and DDP then averages over W
    GPUs, so the encoders receive ``1/W`` of the true gradient while ``tau`` receives all of it.
    Here both ``image_feats`` and ``text_feats`` pass through :func:`scale_gradient` with
    ``1/W`` (forward value unchanged), ``temperature`` is left untouched. Use the same option
    for the EDA twin term.

    Args:
      image_feats: [N, D] L2-normalised image projections ``v`` (computed in float32).
      text_feats: [N, D] L2-normalised text projections ``t`` of the same pairs.
      labels: [N] int identity labels.
      temperature: [] float temperature ``tau`` (differentiable).
      gradient_scale: ``"global"`` or ``"per_device_emulation"``.
      num_reference_devices: W of the emulation (4 in the reference runs).

    Returns:
      [] float32 loss (reduced).
    """
    if gradient_scale not in GRADIENT_SCALES:
        raise ValueError(f"gradient_scale must be one of {GRADIENT_SCALES}, got {gradient_scale!r}")
    image_feats = image_feats.astype(jnp.float32)
    text_feats = text_feats.astype(jnp.float32)
    if gradient_scale == "per_device_emulation":
        image_feats = scale_gradient(image_feats, 1.0 / num_reference_devices)
        text_feats = scale_gradient(text_feats, 1.0 / num_reference_devices)
    logits = jnp.einsum("nd,md->nm", image_feats, text_feats, precision=_HIGHEST)
    logits = logits / jnp.asarray(temperature, jnp.float32)
    same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
    targets = same / jnp.sum(same, axis=1, keepdims=True)
    # Q is symmetric, so the column (text-to-image) term uses the same targets transposed.
    image_to_text = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=1), axis=1))
    text_to_image = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=0), axis=0))
    return (image_to_text + text_to_image) / 2


def smoothed_binary_cross_entropy(
    logits: Array, target: Array, valid: Array, *, label_smoothing: float
) -> tuple[Array, Array]:
    """Sum and count of 2-way label-smoothed cross-entropies over the valid entries.

    Targets are ``(1 - eps) * onehot + eps / 2`` (PyTorch ``label_smoothing`` on 2 classes).

    Args:
      logits: [..., 2] float logits.
      target: [...] int class in {0, 1} (anything where ``valid`` is False).
      valid: [...] bool, which entries count.
      label_smoothing: eps.

    Returns:
      (sum [] float32, count [] float32) over the valid entries.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(jnp.clip(target, 0, 1), 2, dtype=jnp.float32)
    soft = (1.0 - label_smoothing) * onehot + label_smoothing / 2
    per_entry = -jnp.sum(soft * log_probs, axis=-1)
    valid = valid.astype(jnp.float32)
    return jnp.sum(per_entry * valid), jnp.sum(valid)


def _safe_mean(total: Array, count: Array) -> Array:
    """``total / count``, 0 where ``count == 0`` (a fully ignored term contributes 0)."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("group_size", "label_smoothing"))
def iac_loss(
    image_feats: Array,
    prompt_feats: Array,
    attribute_labels: Array,
    temperature: Array,
    *,
    group_size: int,
    label_smoothing: float = 0.0,
) -> Array:
    """Image-attribute contrastive loss (aptm §4.5), per reference-sized group, then averaged.

    ``G = v a^T / tau`` [B, 2K]; attribute i uses the logits of prompts (2i, 2i + 1) and class
    ``y_i``; samples with ``y_i = -1`` are dropped; each attribute's loss is the mean over its
    valid samples in the group (0 if none, still counted in the 1/K average).

    Args:
      image_feats: [B, D] L2-normalised image projections (B a multiple of ``group_size``).
      prompt_feats: [2K, D] L2-normalised prompt projections ``a`` shared by all groups, or
        [G, 2K, D] one encoding per group (the reference encodes the prompts on every GPU,
        each with its own dropout).
      attribute_labels: [B, K] int labels in {-1, 0, 1}.
      temperature: [] float temperature.
      group_size: reference per-GPU batch (``B_ref``); ``B // group_size`` groups.
      label_smoothing: eps (0.4 for MALS pre-training, 0 for PA-100K).

    Returns:
      [] float32 mean over groups of ``(1/K) sum_i loss_i`` (reduced).
    """
    batch, num_attributes = attribute_labels.shape
    groups = batch // group_size
    prompt_feats = prompt_feats.astype(jnp.float32)
    if prompt_feats.ndim == 2:
        prompt_feats = jnp.broadcast_to(prompt_feats, (groups, *prompt_feats.shape))
    logits = jnp.einsum(
        "gpd,gad->gpa",
        image_feats.astype(jnp.float32).reshape(groups, group_size, -1),
        prompt_feats,
        precision=_HIGHEST,
    ) / jnp.asarray(temperature, jnp.float32)
    logits = logits.reshape(groups, group_size, num_attributes, 2)
    labels = attribute_labels.reshape(groups, group_size, num_attributes)

    def one_group(group_logits: Array, group_labels: Array) -> Array:
        per_attribute = jax.vmap(
            lambda lg, y: _safe_mean(
                *smoothed_binary_cross_entropy(lg, y, y >= 0, label_smoothing=label_smoothing)
            ),
            in_axes=(1, 1),
        )(group_logits, group_labels)
        return jnp.mean(per_attribute)

    return jnp.mean(jax.vmap(one_group)(logits, labels))


EDA_TWIN_WEIGHT = 0.8  # aptm §4.4: hard-coded weight of the EDA-caption ITC and ITM terms.

# aptm §4.6; the task module sums the terms it computed with these weights. `apl_*` are the
# three attribute terms; MALS pre-training weights them 0.8 / 3 each (beta * mean of three).
PRETRAIN_WEIGHTS: Mapping[str, float] = {
    "itc": 1.0,
    "itm": 1.0,
    "mlm": 1.0,
    "iac": 0.8 / 3,
    "iam": 0.8 / 3,
    "mam": 0.8 / 3,
}
FINETUNE_WEIGHTS: Mapping[str, float] = {
    "itc": 1.0,
    "itc_eda": EDA_TWIN_WEIGHT,
    "itm": 1.0,
    "itm_eda": EDA_TWIN_WEIGHT,
    "mlm": 1.0,
}
PA100K_WEIGHTS: Mapping[str, float] = {"iac": 1.0, "iam": 1.0, "mam": 1.0}


def combine_objectives(
    terms: Mapping[str, Array], weights: Mapping[str, float]
) -> tuple[Array, dict[str, Array]]:
    """Weighted sum of named loss terms (aptm §4.4, §4.6).

    Every weight must have a term and every term a weight, so a misspelt or forgotten term
    fails loudly instead of silently dropping out of the objective.

    Args:
      terms: name -> [] float loss value (e.g. ``{"itc": ..., "itc_eda": ...}``).
      weights: name -> static float weight (e.g. :data:`FINETUNE_WEIGHTS`).

    Returns:
      (total [] float32, dict of the weighted terms ``weight * term`` for logging).
    """
    if set(terms) != set(weights):
        raise ValueError(
            f"loss terms {sorted(terms)} do not match the weighted names {sorted(weights)}"
        )
    weighted = {name: weights[name] * terms[name].astype(jnp.float32) for name in sorted(terms)}
    return sum(weighted.values(), jnp.zeros((), jnp.float32)), weighted
