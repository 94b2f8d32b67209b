"""The joint-space objective of every player in one differentiable sum (attribute_reid §3.6).

The image branch φ, the concept generator ψ (with the shared semantic-ID classifier W_s) and
the discriminator D train in one jitted step, each with its own optimizer (an
`optax.multi_transform` over their parameter subtrees). One sum gives each player exactly
its own gradient because of where the gradient is stopped:

* D sees detached embeddings in L_D, so L_D moves only D;
* the adversarial term L_adv(ψ) runs D with detached parameters, so it moves only ψ;
* nothing else reaches D.

  stage 1: L = w_attr L_attr(heads) + w_sid L_sid(φ)
  stage 2: L = stage 1 + L_sid(ψ) + L_rank + λ_adv L_adv(ψ) + w_disc L_D

(each D step is simultaneous with the generator step, on the same batch [D]). The weights
make the variants of §3.8: attribute-prediction retrieval trains L_attr alone (stage 1 only),
the joint space without adversary sets λ_adv = w_disc = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from reid_jax import distances
from reid_jax.losses import joint_space
from reid_jax.losses.classification import softmax_cross_entropy

Array = jax.Array


STAGE1_TERMS = ("attr", "sid_image")
DEFAULT_WEIGHTS = {
    "attr": 1.0,
    "sid_image": 1.0,
    "sid_concept": 1.0,
    "rank": 1.0,
    "adv": 0.1,
    "disc": 1.0,
}


def semantic_id_loss(embeddings: Array, sids: Array, sid_weights: Array, scale: float) -> Array:
    """CE(τ cos(W_s, e), sid) (attribute_reid §3.4).

    Args: embeddings [N, d]; sids [N] int in [0, S); sid_weights [S, d]; scale τ.
    Returns: [] float32.
    """
    logits = scale * distances.pairwise_cosine(embeddings, sid_weights)
    return softmax_cross_entropy(logits, sids)


def joint_objective(
    image: dict[str, Array],
    concepts: Array,
    discriminator_apply: Callable[[Any, Array], dict[str, Array]],
    discriminator_params: Any,
    sid_weights: Array,
    *,
    image_labels: Array,
    image_sids: Array,
    concept_labels: Array,
    concept_sids: Array,
    stage: int | Array,
    weights: Mapping[str, float] | None = None,
    margin: float = 0.2,
    sid_scale: float = 16.0,
    softmax_groups: Sequence[tuple[int, int]] = (),
) -> tuple[Array, dict[str, Array]]:
    """Total loss and its terms.

    Args:
      image: the image branch's outputs, 'embedding' [B, d] and 'attribute_logits' [B, A].
      concepts: [M, d] ψ of the batch's concept vectors (ignored in stage 1).
      discriminator_apply: (params, embeddings [N, d]) -> {'real_logits' [N],
        'attribute_logits' [N, A]}.
      discriminator_params: D's parameters.
      sid_weights: [S, d] the semantic-ID classifier.
      image_labels: [B, A] model-encoded attributes of the images' identities.
      image_sids: [B] their semantic IDs.
      concept_labels: [M, A] the concept vectors; concept_sids: [M] their semantic IDs.
      stage: 1 (image branch only), 2 (everything), or a traced [] int: then the stage-2
        terms are computed and count only where it is >= 2 (one jitted step for both stages).
      weights: term name -> weight, over `DEFAULT_WEIGHTS` (λ_adv = weights['adv']).
      margin, sid_scale, softmax_groups: see the losses.

    Returns:
      (loss [], terms {'attr', 'sid_image', and in stage 2 'sid_concept', 'rank', 'adv',
      'disc'}).
    """
    traced = isinstance(stage, jax.Array)
    if not traced and stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}, choose from {DEFAULT_WEIGHTS}")
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    groups = tuple(softmax_groups)
    terms = {
        "attr": joint_space.attribute_loss(image["attribute_logits"], image_labels, groups),
        "sid_image": semantic_id_loss(image["embedding"], image_sids, sid_weights, sid_scale),
    }
    if traced or stage == 2:
        terms["sid_concept"] = semantic_id_loss(concepts, concept_sids, sid_weights, sid_scale)
        terms["rank"] = joint_space.global_ranking_loss(
            image["embedding"], image_labels, concepts, concept_labels, margin=margin
        )
        frozen = discriminator_apply(jax.lax.stop_gradient(discriminator_params), concepts)
        terms["adv"] = joint_space.concept_adversarial_loss(
            frozen["real_logits"], frozen["attribute_logits"], concept_labels, groups
        )
        real = discriminator_apply(discriminator_params, jax.lax.stop_gradient(image["embedding"]))
        fake = discriminator_apply(discriminator_params, jax.lax.stop_gradient(concepts))
        terms["disc"] = joint_space.discriminator_loss(
            real["real_logits"],
            fake["real_logits"],
            real["attribute_logits"],
            image_labels,
            groups,
        )
    gate = (stage >= 2).astype(jnp.float32) if traced else 1.0
    loss = sum(
        weights[name] * value * (1.0 if name in STAGE1_TERMS else gate)
        for name, value in terms.items()
    )
    return loss, terms
