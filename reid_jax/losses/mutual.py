"""AlignedReID mutual-learning terms: probability (KL) and distance-matrix (metric) losses.

Facts: alignedreid §5.1-§5.2. For model i every peer j's outputs are constants
(``stop_gradient``), so summing the per-model totals of all models and differentiating once
gives each model exactly its own gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.jit
def probability_mutual_loss(logits_i: Array, logits_j: Array) -> Array:
    """KL(sg(p_j) || p_i) summed over classes, averaged over the batch (alignedreid §5.2).

    Args:
      logits_i: [B, C] logits of the model being trained (receives gradient).
      logits_j: [B, C] logits of the peer (detached).

    Returns:
      [] float32 ``(1/B) sum_b sum_c p_j (log p_j - log p_i)`` (reduced, "batchmean").
    """
    log_p_i = jax.nn.log_softmax(logits_i.astype(jnp.float32), axis=-1)
    log_p_j = jax.nn.log_softmax(jax.lax.stop_gradient(logits_j).astype(jnp.float32), axis=-1)
    # log_softmax is finite, so p * (log p - log q) never forms 0 * -inf.
    kl = jnp.sum(jnp.exp(log_p_j) * (log_p_j - log_p_i), axis=-1)
    return jnp.mean(kl)


@jax.jit
def distance_mutual_loss(dist_i: Array, dist_j: Array) -> Array:
    """Metric mutual loss: mean squared difference to the peer's distance matrix (§5.2).

    Args:
      dist_i: [B, B] distance matrix of the model being trained (receives gradient).
      dist_j: [B, B] peer distance matrix (detached).

    Returns:
      [] float32 ``(1/B^2) sum_ab (dist_i - sg(dist_j))^2`` (reduced).
    """
    diff = dist_i.astype(jnp.float32) - jax.lax.stop_gradient(dist_j).astype(jnp.float32)
    return jnp.mean(jnp.square(diff))


def _average_over_peers(fn, per_model: Sequence[Array]) -> list[Array]:
    """``[(1/(M-1)) sum_{j != i} fn(x_i, x_j) for i in range(M)]``."""
    num_models = len(per_model)
    return [
        sum(fn(per_model[i], per_model[j]) for j in range(num_models) if j != i) / (num_models - 1)
        for i in range(num_models)
    ]


def mutual_losses(
    per_model_logits: Sequence[Array] | None,
    per_model_dists: Sequence[Array] | None,
) -> list[dict[str, Array]]:
    """Mutual terms of each of M >= 2 models trained together on the same batch (§5.2).

    ``probability_mutual`` of model i is ``(1/(M-1)) sum_{j != i} KL(sg(p_j) || p_i)`` (batch
    mean); ``distance_mutual`` is ``(1/(M-1)) sum_{j != i} mean_ab (D_i - sg(D_j))^2``. Pass the
    global distance matrices for ``L_gdm`` (or call again with local ones for ``L_ldm``). The
    terms are unweighted: the task module applies ``w_pm``/``w_gdm``. Traceable (call it inside
    the jitted step; M is static).

    Args:
      per_model_logits: M arrays [B, C] of class logits, or None to skip the KL term.
      per_model_dists: M arrays [B, B] of distance matrices, or None to skip the metric term.

    Returns:
      M dicts (one per model, same order) with float32 scalars under ``"probability_mutual"``
      and/or ``"distance_mutual"`` (only the keys whose inputs were given).

    Raises:
      ValueError: fewer than two models, or the two lists have different lengths.
    """
    given = [x for x in (per_model_logits, per_model_dists) if x is not None]
    counts = {len(x) for x in given}
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(
            "mutual_losses needs the same number (>= 2) of models in per_model_logits and "
            f"per_model_dists; got {[len(x) for x in given]}"
        )
    num_models = counts.pop()
    terms: list[dict[str, Array]] = [{} for _ in range(num_models)]
    if per_model_logits is not None:
        for term, value in zip(
            terms, _average_over_peers(probability_mutual_loss, per_model_logits), strict=True
        ):
            term["probability_mutual"] = value
    if per_model_dists is not None:
        for term, value in zip(
            terms, _average_over_peers(distance_mutual_loss, per_model_dists), strict=True
        ):
            term["distance_mutual"] = value
    return terms
