"""Attribute–image joint-space losses (attribute_reid §3.1, §3.3, §3.5; every detail [D]).

* `attribute_loss`: the attribute heads' loss — independent sigmoids per binary column and a
  softmax over each one-hot group (Market age), unknown labels (-1) ignored.
* `discriminator_loss` / `concept_adversarial_loss`: the semantic-consistent adversary, a
  non-saturating GAN with an auxiliary attribute classifier: the discriminator tells image
  embeddings (real) from attribute concepts (fake) and learns the attributes of real ones;
  the concept generator wants to look real and to carry its own attributes.
* `global_ranking_loss`: batch-hard bidirectional ranking on cosine similarity where images
  and concepts with identical attribute vectors are positives, never negatives.

Pure functions of arrays (float32 math), jit-compiled; shapes in the docstrings.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from reid_jax import distances

Array = jax.Array


def _masked_mean(values: Array, mask: Array) -> Array:
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("softmax_groups",))
def attribute_loss(
    logits: Array, labels: Array, softmax_groups: Sequence[tuple[int, int]] = ()
) -> Array:
    """Attribute-head loss.

    Args:
      logits: [B, A] float.
      labels: [B, A] int in {-1, 0, 1}; a softmax group holds a one-hot block (-1 = unknown).
      softmax_groups: (start, stop) column spans scored as one softmax each (e.g. Market
        age, 4 columns); every other column is an independent sigmoid.

    Returns:
      [] float32: mean sigmoid BCE over the known binary entries plus, per softmax group, the
      mean cross-entropy over the rows where that group is known.
    """
    logits = logits.astype(jnp.float32)
    binary = jnp.ones(logits.shape[-1], bool)
    total = jnp.zeros((), jnp.float32)
    for start, stop in softmax_groups:
        binary = binary.at[start:stop].set(False)
        block, target = logits[:, start:stop], labels[:, start:stop]
        known = jnp.all(target >= 0, axis=-1)
        ce = optax.softmax_cross_entropy(block, jnp.maximum(target, 0).astype(jnp.float32))
        total = total + _masked_mean(ce, known)
    bce = optax.sigmoid_binary_cross_entropy(logits, jnp.maximum(labels, 0).astype(jnp.float32))
    return total + _masked_mean(bce, (labels >= 0) & binary[None, :])


def _bce(logits: Array, target: float) -> Array:
    logits = logits.astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


@functools.partial(jax.jit, static_argnames=("softmax_groups",))
def discriminator_loss(
    real_logits: Array,
    fake_logits: Array,
    real_attribute_logits: Array,
    real_labels: Array,
    softmax_groups: Sequence[tuple[int, int]] = (),
) -> Array:
    """L_D = BCE(D(φ(x)), 1) + BCE(D(ψ(a)), 0) + L_attr(D_at(φ(x)), a(id(x))) (attribute_reid §3.3).

    Args:
      real_logits: [B] real/fake logits of (detached) image embeddings.
      fake_logits: [M] real/fake logits of (detached) concepts.
      real_attribute_logits: [B, A] attribute logits of the image embeddings.
      real_labels: [B, A] the images' attributes.
      softmax_groups: as in `attribute_loss`.

    Returns:
      [] float32.
    """
    return (
        _bce(real_logits, 1.0)
        + _bce(fake_logits, 0.0)
        + attribute_loss(real_attribute_logits, real_labels, softmax_groups)
    )


@functools.partial(jax.jit, static_argnames=("softmax_groups",))
def concept_adversarial_loss(
    fake_logits: Array,
    fake_attribute_logits: Array,
    concept_labels: Array,
    softmax_groups: Sequence[tuple[int, int]] = (),
) -> Array:
    """L_adv(ψ) = BCE(D(ψ(a)), 1) + L_attr(D_at(ψ(a)), a) (attribute_reid §3.3).

    Args:
      fake_logits: [M] real/fake logits of the concepts.
      fake_attribute_logits: [M, A] the discriminator's attribute logits of the concepts.
      concept_labels: [M, A] the attribute vectors the concepts were generated from.
      softmax_groups: as in `attribute_loss`.

    Returns:
      [] float32.
    """
    return _bce(fake_logits, 1.0) + attribute_loss(
        fake_attribute_logits, concept_labels, softmax_groups
    )


def _batch_hard(similarity: Array, positive: Array, margin: float) -> Array:
    """Mean over anchors (rows) with a positive and a negative of
    relu(margin + hardest negative - hardest positive)."""
    big = jnp.float32(4.0)  # cosines lie in [-1, 1]
    hardest_pos = jnp.min(jnp.where(positive, similarity, big), axis=-1)
    hardest_neg = jnp.max(jnp.where(positive, -big, similarity), axis=-1)
    valid = jnp.any(positive, axis=-1) & jnp.any(~positive, axis=-1)
    return _masked_mean(jax.nn.relu(margin + hardest_neg - hardest_pos), valid)


@functools.partial(jax.jit, static_argnames=("margin",))
def global_ranking_loss(
    image_feats: Array,
    image_labels: Array,
    concept_feats: Array,
    concept_labels: Array,
    margin: float = 0.2,
) -> Array:
    """Batch-hard bidirectional ranking with identical-vector positives (attribute_reid §3.5).

    A pair (image b, concept m) is positive iff their attribute vectors are equal in every
    column (images of different identities with the same vector are positives). Image
    anchors: relu(margin + most similar negative concept - least similar positive concept);
    concept anchors likewise over images. Each direction averages over its anchors that have
    both a positive and a negative; the loss is the sum of the two directions.

    Args:
      image_feats: [B, d] image embeddings φ(x) (normalised here).
      image_labels: [B, A] their identities' attribute vectors.
      concept_feats: [M, d] concepts ψ(a) (normalised here).
      concept_labels: [M, A] the vectors they were generated from.
      margin: m.

    Returns:
      [] float32.
    """
    similarity = distances.pairwise_cosine(image_feats, concept_feats)  # [B, M]
    positive = jnp.all(image_labels[:, None, :] == concept_labels[None, :, :], axis=-1)
    return _batch_hard(similarity, positive, margin) + _batch_hard(similarity.T, positive.T, margin)
