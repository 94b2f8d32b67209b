"""Tests for reid_jax.losses.mutual against NumPy re-derivations of alignedreid §5.2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.losses import mutual


def _np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_kl_batchmean(logits_i, logits_j):
    p_i, p_j = _np_softmax(logits_i), _np_softmax(logits_j)
    total = 0.0
    for b in range(p_i.shape[0]):
        for c in range(p_i.shape[1]):
            if p_j[b, c] > 0:
                total += p_j[b, c] * (np.log(p_j[b, c]) - np.log(p_i[b, c]))
    return total / p_i.shape[0]


def _np_dist_mutual(dist_i, dist_j):
    n = dist_i.shape[0]
    return float(np.sum((np.asarray(dist_i, np.float64) - dist_j) ** 2) / n**2)


@pytest.fixture(scope="module")
def outputs():
    rng = np.random.default_rng(0)
    logits = [jnp.asarray(rng.normal(scale=3.0, size=(6, 5)), jnp.float32) for _ in range(3)]
    dists = [jnp.asarray(rng.uniform(0, 2, size=(6, 6)), jnp.float32) for _ in range(3)]
    return logits, dists


def test_probability_mutual_loss_matches_numpy(outputs):
    logits, _ = outputs
    got = mutual.probability_mutual_loss(logits[0], logits[1])
    np.testing.assert_allclose(got, _np_kl_batchmean(logits[0], logits[1]), rtol=1e-5)
    same = mutual.probability_mutual_loss(logits[2], logits[2])
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_probability_mutual_loss_peer_is_detached_and_finite_when_saturated(outputs):
    logits, _ = outputs
    grad_i, grad_j = jax.jit(jax.grad(mutual.probability_mutual_loss, argnums=(0, 1)))(
        logits[0], logits[1]
    )
    assert float(jnp.abs(grad_j).max()) == 0.0
    # d/dz_i KL(p_j || softmax(z_i)) = (p_i - p_j) / B.
    want = (_np_softmax(logits[0]) - _np_softmax(logits[1])) / logits[0].shape[0]
    np.testing.assert_allclose(grad_i, want, atol=1e-6)
    saturated = jnp.asarray([[200.0, -200.0, 0.0]])  # p_j has exact zeros in float32
    value = mutual.probability_mutual_loss(jnp.zeros((1, 3)), saturated)
    assert np.isfinite(float(value))


def test_distance_mutual_loss_matches_numpy_and_detaches_peer(outputs):
    _, dists = outputs
    got = mutual.distance_mutual_loss(dists[0], dists[1])
    np.testing.assert_allclose(got, _np_dist_mutual(dists[0], dists[1]), rtol=1e-5)
    grad_i, grad_j = jax.grad(mutual.distance_mutual_loss, argnums=(0, 1))(dists[0], dists[1])
    assert float(jnp.abs(grad_j).max()) == 0.0
    np.testing.assert_allclose(grad_i, 2 * (dists[0] - dists[1]) / 36, atol=1e-6)


def test_mutual_losses_three_models(outputs):
    logits, dists = outputs
    terms = jax.jit(mutual.mutual_losses)(logits, dists)
    assert len(terms) == 3
    for i in range(3):
        peers = [j for j in range(3) if j != i]
        want_pm = np.mean([_np_kl_batchmean(logits[i], logits[j]) for j in peers])
        want_dm = np.mean([_np_dist_mutual(dists[i], dists[j]) for j in peers])
        np.testing.assert_allclose(terms[i]["probability_mutual"], want_pm, rtol=1e-5)
        np.testing.assert_allclose(terms[i]["distance_mutual"], want_dm, rtol=1e-5)


def test_mutual_losses_sum_gives_each_model_its_own_gradient(outputs):
    logits, dists = outputs
    pair = logits[:2]

    def joint(pair):
        return sum(t["probability_mutual"] for t in mutual.mutual_losses(pair, None))

    grads = jax.grad(joint)(pair)
    for i, j in ((0, 1), (1, 0)):
        own = jax.grad(mutual.probability_mutual_loss)(pair[i], pair[j])
        np.testing.assert_allclose(grads[i], own, atol=1e-7)
    only_dist = mutual.mutual_losses(None, dists[:2])
    assert set(only_dist[0]) == {"distance_mutual"}


def test_mutual_losses_rejects_bad_model_counts(outputs):
    logits, dists = outputs
    with pytest.raises(ValueError, match="same number"):
        mutual.mutual_losses(logits[:1], None)
    with pytest.raises(ValueError, match="same number"):
        mutual.mutual_losses(logits[:2], dists)
    with pytest.raises(ValueError, match="same number"):
        mutual.mutual_losses(None, None)
