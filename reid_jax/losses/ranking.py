"""SSAN ranking losses: cosine similarity, semi-hard ranking term, adaptive margin, CR loss.

Facts: ssan §3.2 (similarity), §3.3 (semi-hard term R(S, m, g)), §3.4 (compound ranking loss,
adaptive margin, 0.16 gate, epoch switch) and §7.2-§7.3 (on-device mining with Gumbel-argmax,
stop_gradient on margins, gates and mining decisions, 0 when an anchor has no triplet).

Every function is pure and jit-compiled; randomness comes only from ``key``. The per-anchor
semi-hard computation is written for one row of the similarity matrix and ``jax.vmap``-ed over
anchors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST


@jax.jit
def cosine_similarity_matrix(a: Array, b: Array, *, eps: float = 1e-8) -> Array:
    """Cosine similarities between every row of ``a`` and every row of ``b`` (ssan §3.2).

    Rows are normalised as ``x / (||x|| + eps)`` (the reference's epsilon placement); the
    matmul runs at full float32 precision because the semi-hard comparisons depend on it.

    Args:
      a: [B, F] features (any float dtype; computed in float32), e.g. images.
      b: [B2, F] features, e.g. captions (B2 = B for the ranking loss).
      eps: added to the norm before dividing.

    Returns:
      [B, B2] float32 similarity matrix, unreduced; entry (i, j) = <a_i, b_j> / norms.
    """
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    a = a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)
    b = b / (jnp.linalg.norm(b, axis=-1, keepdims=True) + eps)
    return jnp.einsum("bf,cf->bc", a, b, precision=_HIGHEST)


def _semi_hard_one_anchor(
    sim_row: Array,
    anchor_index: Array,
    labels: Array,
    margin: Array,
    gate: Array,
    noise_row: Array,
) -> tuple[Array, Array, Array]:
    """Semi-hard hinge of one anchor (one row of S); vmapped over anchors by the callers.

    Args:
      sim_row: [B] float32 similarities of the anchor to every candidate (differentiable).
      anchor_index: [] int, the anchor's own (positive) column.
      labels: [B] int identity labels of the columns (the anchor's label is labels[anchor]).
      margin: [] float32 margin m_i (treated as a constant).
      gate: [] bool, whether the anchor takes part at all.
      noise_row: [B] float32 Gumbel noise for the uniform random pick.

    Returns:
      (hinge [] float32 (0 without a candidate), negative_index [] int32, found [] bool).
    """
    margin = jax.lax.stop_gradient(margin)
    mined = jax.lax.stop_gradient(sim_row)
    positive = mined[anchor_index]
    # ssan §3.3: strict S_ii - m < S_ij < S_ii, other identity only; hard negatives excluded.
    candidates = (
        (labels != labels[anchor_index]) & (mined < positive) & (mined > positive - margin) & gate
    )
    # Gumbel-argmax over the candidates = one candidate uniformly at random (ssan §7.3).
    negative_index = jnp.argmax(jnp.where(candidates, noise_row, -jnp.inf)).astype(jnp.int32)
    found = jnp.any(candidates)
    hinge = jax.nn.relu(margin - sim_row[anchor_index] + sim_row[negative_index])
    return jnp.where(found, hinge, 0.0), negative_index, found


@jax.jit
def semi_hard_anchor_hinges(
    sim: Array, labels: Array, margins: Array, gate: Array, *, key: Array
) -> tuple[Array, Array, Array]:
    """One direction of the semi-hard ranking term: one random triplet per anchor row.

    The anchor of row i is paired with its own column i (the positive). Candidates are columns
    j with ``labels[j] != labels[i]`` and ``sim[i, i] - margins[i] < sim[i, j] < sim[i, i]``
    (strict), only where ``gate[i]``; one is drawn uniformly at random by Gumbel-argmax with
    noise ``jax.random.gumbel(key, sim.shape)``. Mining, margins and gates carry no gradient.

    Args:
      sim: [B, B] similarities, rows are anchors (computed in float32).
      labels: [B] int identity labels (shared by rows and columns).
      margins: [B] float per-anchor margins m_i.
      gate: [B] bool per-anchor gate g_i.
      key: PRNG key for the random pick.

    Returns:
      hinges: [B] float32 ``relu(m_i - sim_ii + sim_ij)`` for the picked j, 0 where no
        candidate exists (unreduced).
      negative_index: [B] int32 picked column (0 and meaningless where ``found`` is False).
      found: [B] bool, whether the anchor had at least one candidate.
    """
    sim = sim.astype(jnp.float32)
    batch = sim.shape[0]
    noise = jax.random.gumbel(key, sim.shape, jnp.float32)
    per_anchor = jax.vmap(_semi_hard_one_anchor, in_axes=(0, 0, None, 0, 0, 0))
    return per_anchor(
        sim,
        jnp.arange(batch),
        labels,
        jnp.broadcast_to(jnp.asarray(margins, jnp.float32), (batch,)),
        jnp.broadcast_to(jnp.asarray(gate, bool), (batch,)),
        noise,
    )


@jax.jit
def semi_hard_ranking_loss(
    sim: Array, labels: Array, margins: Array, gate: Array, *, key: Array
) -> Array:
    """Semi-hard ranking term R(S, m, g) of ssan §3.3, summed over both directions.

    Image anchors use the rows of ``sim`` (negatives: captions of other identities), caption
    anchors use the rows of ``sim.T`` (negatives: images), with the same ``margins``/``gate``
    and independent random picks (``key`` is split in two). Anchors without a semi-hard
    candidate contribute 0 (ssan §7.2 recommendation instead of the reference's fallback).

    Args:
      sim: [B, B] float32 similarities, rows = images, columns = captions, diagonal = pairs.
      labels: [B] int identity labels.
      margins: [B] float per-anchor margins (constants, no gradient).
      gate: [B] bool per-anchor gates (an anchor gated out is dropped from both directions).
      key: PRNG key.

    Returns:
      [] float32 SUM of the selected hinges over both directions (reduced, not a mean).
    """
    image_key, caption_key = jax.random.split(key)
    image_hinges, _, _ = semi_hard_anchor_hinges(sim, labels, margins, gate, key=image_key)
    caption_hinges, _, _ = semi_hard_anchor_hinges(sim.T, labels, margins, gate, key=caption_key)
    return jnp.sum(image_hinges) + jnp.sum(caption_hinges)


@jax.jit
def adaptive_margin(
    sim_diag: Array,
    partner_sim_diag: Array,
    *,
    epoch: Array | int,
    epoch_begin: int = 5,
    alpha: float = 0.2,
    gate_threshold: float = 0.16,
) -> tuple[Array, Array]:
    """Adaptive margin m' and gate g' of the weak (partner-caption) term, ssan §3.4.

    Before ``epoch_begin``: ``m' = alpha / 2`` and every gate is open. From ``epoch_begin`` on:
    ``lam = min(|S'_ii| / max(|S_ii|, tiny), 1)`` (ssan §7.2 fix of the reference's clip),
    ``m' = (lam + 1) * alpha / 2`` and ``g' = m' >= gate_threshold``. No gradient flows.

    Args:
      sim_diag: [B] float diagonal S_ii of the image-caption similarity.
      partner_sim_diag: [B] float diagonal S'_ii of the image-partner-caption similarity.
      epoch: [] int 0-based epoch index; may be traced (no recompilation per epoch).
      epoch_begin: first epoch with the adaptive margin.
      alpha: base margin.
      gate_threshold: anchors with m' below it are gated out.

    Returns:
      (margins [B] float32, gate [B] bool).
    """
    own = jnp.abs(jax.lax.stop_gradient(sim_diag).astype(jnp.float32))
    partner = jnp.abs(jax.lax.stop_gradient(partner_sim_diag).astype(jnp.float32))
    lam = jnp.minimum(partner / jnp.maximum(own, jnp.finfo(jnp.float32).tiny), 1.0)
    adapted = (lam + 1.0) * alpha / 2.0
    switched = jnp.asarray(epoch) >= epoch_begin
    margins = jnp.where(switched, adapted, jnp.full_like(adapted, alpha / 2.0))
    gate = jnp.where(switched, adapted >= gate_threshold, True)
    return margins, gate


@jax.jit
def compound_ranking_loss(
    image_feats: Array,
    text_feats: Array,
    partner_feats: Array,
    labels: Array,
    *,
    key: Array,
    epoch: Array | int,
    alpha: float = 0.2,
    beta: float = 0.1,
    epoch_begin: int = 5,
    gate_threshold: float = 0.16,
) -> Array:
    """Compound ranking (CR) loss of one feature level, ssan §3.4.

    ``L_CR = R(S, alpha, 1) + beta * R(S', m', g')`` with ``S = cos(images, captions)``,
    ``S' = cos(images, partner captions)`` and (m', g') from :func:`adaptive_margin`. The two
    terms use independent keys. Part features may be passed as [B, K, D]; they are flattened
    per sample (the cosine is taken on the concatenation of parts, ssan §3.2).

    Args:
      image_feats: [B, F] (or [B, ...]) image features.
      text_feats: [B, F] (or [B, ...]) features of each image's own caption.
      partner_feats: [B, F] (or [B, ...]) features of a caption of another image of the same
        identity (receives gradient through S').
      labels: [B] int identity labels.
      key: PRNG key.
      epoch: [] int 0-based epoch index (may be traced).
      alpha: strong-term margin and base of the adaptive margin.
      beta: weight of the weak term.
      epoch_begin: first epoch with the adaptive margin.
      gate_threshold: gate on the adaptive margin.

    Returns:
      [] float32 loss (sum over anchors and directions, reduced).
    """
    batch = image_feats.shape[0]
    image_feats = image_feats.reshape(batch, -1)
    sim = cosine_similarity_matrix(image_feats, text_feats.reshape(batch, -1))
    partner_sim = cosine_similarity_matrix(image_feats, partner_feats.reshape(batch, -1))
    strong_key, weak_key = jax.random.split(key)
    strong_margins = jnp.full((batch,), alpha, jnp.float32)
    strong = semi_hard_ranking_loss(
        sim, labels, strong_margins, jnp.ones((batch,), bool), key=strong_key
    )
    weak_margins, weak_gate = adaptive_margin(
        jnp.diagonal(sim),
        jnp.diagonal(partner_sim),
        epoch=epoch,
        epoch_begin=epoch_begin,
        alpha=alpha,
        gate_threshold=gate_threshold,
    )
    weak = semi_hard_ranking_loss(partner_sim, labels, weak_margins, weak_gate, key=weak_key)
    return strong + beta * weak
