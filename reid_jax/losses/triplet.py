"""AlignedReID triplet losses: batch-hard mining, global and local triplet hinges.

Facts: alignedreid §4.1 (batch-hard mining on the global distance, anchor included among its
own positives), §4.2 (global triplet, margin 0.3, soft-margin variant), §4.3 (local triplet on
the pairs mined from the global distance). Mining is per-anchor, written for one row and
``jax.vmap``-ed; indices carry no gradient, the selected distances do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from reid_jax import distances

Array = jax.Array


def _hardest_in_row(
    dist_row: Array, anchor_index: Array, labels: Array
) -> tuple[Array, Array, Array, Array]:
    """Batch-hard positive and negative of one anchor (one row of D).

    Args:
      dist_row: [B] float32 distances from the anchor to every sample.
      anchor_index: [] int, the anchor's own index.
      labels: [B] int labels.

    Returns:
      (positive_dist [], negative_dist [] (+inf without negatives), positive_index [] int32,
      negative_index [] int32 (= anchor_index without negatives)).
    """
    same = labels == labels[anchor_index]
    mined = jax.lax.stop_gradient(dist_row)
    # The anchor itself stays among the positives (alignedreid §4.1), so one always exists.
    positive_index = jnp.argmax(jnp.where(same, mined, -jnp.inf)).astype(jnp.int32)
    negative_index = jnp.argmin(jnp.where(same, jnp.inf, mined)).astype(jnp.int32)
    has_negative = jnp.any(~same)
    negative_index = jnp.where(has_negative, negative_index, anchor_index.astype(jnp.int32))
    negative_dist = jnp.where(has_negative, dist_row[negative_index], jnp.inf)
    return dist_row[positive_index], negative_dist, positive_index, negative_index


@jax.jit
def hard_example_mining(dist: Array, labels: Array) -> tuple[Array, Array, Array, Array]:
    """Batch-hard mining (alignedreid §4.1): farthest positive and nearest negative per anchor.

    Positives are all samples with the anchor's label, the anchor itself included (an anchor
    whose only positive is itself gets its own, near-zero, distance). Ties go to the lowest
    index. An anchor without any negative (single-identity batch) gets ``+inf`` as negative
    distance (so its hinge is 0) and its own index as negative index, which
    :func:`local_triplet_loss` reads as "no negative".

    Args:
      dist: [B, B] float distances (rows anchors); gradients flow to the selected entries.
      labels: [B] int identity labels.

    Returns:
      hardest_positive_dist: [B] float32 ``dist[i, p_i]``.
      hardest_negative_dist: [B] float32 ``dist[i, n_i]`` (+inf where no negative exists).
      positive_index: [B] int32 ``p_i``.
      negative_index: [B] int32 ``n_i`` (= i where no negative exists).
    """
    dist = dist.astype(jnp.float32)
    per_anchor = jax.vmap(_hardest_in_row, in_axes=(0, 0, None))
    return per_anchor(dist, jnp.arange(dist.shape[0]), labels)


@jax.jit
def triplet_margin_loss(dist_ap: Array, dist_an: Array, *, margin: float = 0.3) -> Array:
    """Hinge triplet loss ``mean_i relu(margin + d_ap - d_an)`` (alignedreid §4.2).

    Args:
      dist_ap: [B] float anchor-positive distances.
      dist_an: [B] float anchor-negative distances (+inf allowed: contributes 0).
      margin: hinge margin (0.3 in the reference).

    Returns:
      [] float32 mean over anchors (reduced).
    """
    dist_ap = dist_ap.astype(jnp.float32)
    dist_an = dist_an.astype(jnp.float32)
    return jnp.mean(jax.nn.relu(margin + dist_ap - dist_an))


@jax.jit
def soft_margin_triplet_loss(dist_ap: Array, dist_an: Array) -> Array:
    """Soft-margin triplet loss ``mean_i log(1 + exp(d_ap - d_an))`` (margin disabled, §4.2).

    Args:
      dist_ap: [B] float anchor-positive distances.
      dist_an: [B] float anchor-negative distances (+inf allowed: contributes 0).

    Returns:
      [] float32 mean over anchors (reduced).
    """
    return jnp.mean(jax.nn.softplus(dist_ap.astype(jnp.float32) - dist_an.astype(jnp.float32)))


@jax.jit
def local_triplet_loss(
    local_feats: Array,
    positive_index: Array,
    negative_index: Array,
    *,
    margin: float = 0.3,
) -> Array:
    """Local triplet loss on given (e.g. globally mined) pairs, alignedreid §4.3.

    ``mean_i relu(margin + DL(L_i, L_{p_i}) - DL(L_i, L_{n_i}))`` with DL the aligned
    (shortest-path) local distance of ``reid_jax.distances.paired_aligned_local_distance``.
    Anchors with ``negative_index[i] == i`` (no negative, see :func:`hard_example_mining`)
    contribute 0 but still count in the mean, like the global loss's +inf distance.

    Args:
      local_feats: [B, K, D] stripe features (K stripes top to bottom).
      positive_index: [B] int index of each anchor's positive.
      negative_index: [B] int index of each anchor's negative.
      margin: hinge margin (0.3 in the reference).

    Returns:
      [] float32 mean over anchors (reduced).
    """
    local_feats = local_feats.astype(jnp.float32)
    positive_index = jax.lax.stop_gradient(positive_index)
    negative_index = jax.lax.stop_gradient(negative_index)
    dist_ap = distances.paired_aligned_local_distance(local_feats, local_feats[positive_index])
    dist_an = distances.paired_aligned_local_distance(local_feats, local_feats[negative_index])
    has_negative = negative_index != jnp.arange(local_feats.shape[0])
    hinges = jnp.where(has_negative, jax.nn.relu(margin + dist_ap - dist_an), 0.0)
    return jnp.mean(hinges)
