"""Joint-space losses against NumPy loops written from attribute_reid §3.3 and §3.5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.losses import joint_space


def _sigmoid_bce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _attribute_loss_np(logits, labels, groups):
    total, binary = 0.0, np.ones(logits.shape[1], bool)
    for start, stop in groups:
        binary[start:stop] = False
        ces = []
        for row in range(len(logits)):
            target = labels[row, start:stop]
            if (target < 0).any():
                continue
            z = logits[row, start:stop]
            log_p = z - np.log(np.exp(z - z.max()).sum()) - z.max()
            ces.append(-(target * log_p).sum())
        total += np.mean(ces) if ces else 0.0
    terms = [
        _sigmoid_bce(logits[r, c], labels[r, c])
        for r in range(len(logits))
        for c in range(logits.shape[1])
        if binary[c] and labels[r, c] >= 0
    ]
    return total + (np.mean(terms) if terms else 0.0)


def test_attribute_loss_matches_numpy_with_unknowns_and_a_softmax_group():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 7)).astype(np.float32)
    labels = rng.integers(0, 2, size=(6, 7))
    age = np.eye(4, dtype=int)[rng.integers(0, 4, 6)]
    labels[:, 2:6] = age
    labels[1, 3:5] = -1  # unknown age for row 1: the group is skipped there
    labels[4, 0] = -1
    got = joint_space.attribute_loss(logits, labels, softmax_groups=((2, 6),))
    np.testing.assert_allclose(got, _attribute_loss_np(logits, labels, ((2, 6),)), rtol=1e-5)
    plain = joint_space.attribute_loss(logits, labels)
    np.testing.assert_allclose(plain, _attribute_loss_np(logits, labels, ()), rtol=1e-5)


def test_adversary_losses_match_numpy():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=5).astype(np.float32), rng.normal(size=3).astype(np.float32)
    real_attr, fake_attr = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    real_labels, fake_labels = rng.integers(0, 2, (5, 4)), rng.integers(0, 2, (3, 4))
    want_d = (
        _sigmoid_bce(real, 1.0).mean()
        + _sigmoid_bce(fake, 0.0).mean()
        + _attribute_loss_np(real_attr, real_labels, ())
    )
    got_d = joint_space.discriminator_loss(real, fake, real_attr, real_labels)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5)
    want_g = _sigmoid_bce(fake, 1.0).mean() + _attribute_loss_np(fake_attr, fake_labels, ())
    got_g = joint_space.concept_adversarial_loss(fake, fake_attr, fake_labels)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-5)


def _ranking_np(image, image_labels, concept, concept_labels, margin):
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    concept = concept / np.linalg.norm(concept, axis=1, keepdims=True)
    sim = image @ concept.T
    total = 0.0
    for s, a_rows, b_rows in (
        (sim, image_labels, concept_labels),
        (sim.T, concept_labels, image_labels),
    ):
        losses = []
        for i in range(s.shape[0]):
            pos = [s[i, j] for j in range(s.shape[1]) if (a_rows[i] == b_rows[j]).all()]
            neg = [s[i, j] for j in range(s.shape[1]) if not (a_rows[i] == b_rows[j]).all()]
            if pos and neg:
                losses.append(max(0.0, margin + max(neg) - min(pos)))
        total += np.mean(losses) if losses else 0.0
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_ranking_matches_numpy_with_shared_vectors(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.integers(0, 2, (4, 5))
    image_labels = vectors[[0, 0, 1, 2, 2, 3]]  # two identities may share a vector
    concept_labels = np.concatenate([vectors[[0, 1, 2]], rng.integers(0, 2, (2, 5))])
    image = rng.normal(size=(6, 8)).astype(np.float32)
    concept = rng.normal(size=(5, 8)).astype(np.float32)
    got = joint_space.global_ranking_loss(image, image_labels, concept, concept_labels)
    want = _ranking_np(image, image_labels, concept, concept_labels, 0.2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_identical_vectors_are_never_negatives():
    """Two images of different people with one vector: pulling the second concept copy of
    that vector close costs nothing; an image with no positive concept is left out."""
    labels = np.array([[1, 0], [1, 0], [0, 1]])
    image = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    concept = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    loss = joint_space.global_ranking_loss(image, labels, concept, labels[[0, 2]], margin=0.2)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    no_positive = joint_space.global_ranking_loss(
        image[:1], labels[:1], concept[1:], labels[2:], margin=0.2
    )
    assert float(no_positive) == 0.0


def test_ranking_gradient_flows_to_both_sides():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (4, 3))
    image = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    concept = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    grads = jax.grad(joint_space.global_ranking_loss, argnums=(0, 2))(
        image,
        labels,
        concept,
        labels,
        margin=2.0,  # every valid anchor is active
    )
    assert all(float(jnp.abs(g).sum()) > 0 for g in grads)
