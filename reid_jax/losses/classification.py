"""Identity (ID) classification losses: softmax cross-entropy and its per-part average.

Facts: ssan §3.1 (per-part CE, mean over the batch, averaged over parts; no label smoothing),
alignedreid §4.4 (batch-mean softmax CE on the global logits). Which logits feed which term and
with what weight lives in ``training/tasks/<method>.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.jit
def softmax_cross_entropy(logits: Array, labels: Array, *, label_smoothing: float = 0.0) -> Array:
    """Softmax cross-entropy averaged over every leading position.

    The target is ``(1 - label_smoothing) * onehot(label) + label_smoothing / C``. The maths
    runs in float32 whatever the logits' dtype. A label outside ``[0, C)`` (e.g. a -1 junk
    label) makes the result NaN instead of silently reading another class, so the training
    loop's NaN check reports it.

    Args:
      logits: [..., C] unnormalised class scores.
      labels: [...] int class indices in ``[0, C)``.
      label_smoothing: smoothing weight in [0, 1).

    Returns:
      [] float32 mean of the per-position cross-entropies (reduced).
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    num_classes = log_probs.shape[-1]
    valid = (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    target_log_prob = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    # Smoothed CE = -(1 - eps) log p_y - eps * mean_c log p_c, without a dense one-hot.
    per_position = -(1.0 - label_smoothing) * target_log_prob - label_smoothing * jnp.mean(
        log_probs, axis=-1
    )
    per_position = jnp.where(valid, per_position, jnp.nan)
    return jnp.mean(per_position)


@jax.jit
def part_identity_loss(logits: Array, labels: Array) -> Array:
    """Per-part ID loss of one modality: ``(1/K) sum_k CE(logits[:, k], labels)`` (ssan §3.1).

    Each part's CE is a batch mean, so this equals the mean CE over all (sample, part) cells.
    SSAN's ``L_id(set)`` is this function applied to the image logits plus the same applied to
    the caption logits (summed by the task module).

    Args:
      logits: [B, K, C] per-part class scores.
      labels: [B] int identity labels (shared by every part).

    Returns:
      [] float32 mean over parts of the batch-mean cross-entropy (reduced).
    """
    num_parts = logits.shape[1]
    part_labels = jnp.broadcast_to(labels[:, None], labels.shape + (num_parts,))
    return softmax_cross_entropy(logits, part_labels)
