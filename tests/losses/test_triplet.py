"""Tests for reid_jax.losses.triplet against brute-force NumPy loops (alignedreid §3.2, §4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.losses import triplet


def _np_hard_mining(dist, labels):
    """Brute force: farthest positive (self included), nearest negative; first index on ties."""
    b = len(labels)
    pos_d, neg_d, pos_i, neg_i = np.zeros(b), np.full(b, np.inf), np.zeros(b, int), np.arange(b)
    for i in range(b):
        best_p, best_n = -np.inf, np.inf
        for j in range(b):
            if labels[j] == labels[i] and dist[i, j] > best_p:
                best_p, pos_i[i] = dist[i, j], j
            if labels[j] != labels[i] and dist[i, j] < best_n:
                best_n, neg_i[i] = dist[i, j], j
        pos_d[i], neg_d[i] = best_p, best_n
    return pos_d, neg_d, pos_i, neg_i


def _np_aligned_local(f, g):
    """Shortest down/right path through tanh(||f_i - g_j|| / 2), alignedreid §3.2."""
    diff = f[:, None, :].astype(np.float64) - g[None, :, :]
    d = np.tanh(np.sqrt(np.maximum((diff**2).sum(-1), 1e-12)) / 2)
    k = d.shape[0]
    s = np.zeros_like(d)
    for i in range(k):
        for j in range(k):
            prev = [s[i - 1, j]] if i else []
            prev += [s[i, j - 1]] if j else []
            s[i, j] = d[i, j] + (min(prev) if prev else 0.0)
    return s[-1, -1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_example_mining_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    b = 10
    dist = rng.integers(0, 4, size=(b, b)).astype(np.float32)  # many ties
    np.fill_diagonal(dist, 0.0)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # identity 2: only positive is itself
    rng.shuffle(labels)
    got = triplet.hard_example_mining(jnp.asarray(dist), jnp.asarray(labels))
    want = _np_hard_mining(dist, labels)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)
    alone = int(np.flatnonzero(labels == 2)[0])
    assert int(got[2][alone]) == alone and float(got[0][alone]) == 0.0
    assert got[2].dtype == jnp.int32 and got[3].dtype == jnp.int32


def test_hard_example_mining_without_negatives():
    dist = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 4)), jnp.float32)
    pos_d, neg_d, pos_i, neg_i = triplet.hard_example_mining(dist, jnp.zeros(4, jnp.int32))
    assert np.all(np.isinf(neg_d)) and np.array_equal(neg_i, np.arange(4))
    np.testing.assert_array_equal(pos_d, np.asarray(dist).max(axis=1))

    def loss(d):
        ap, an, _, _ = triplet.hard_example_mining(d, jnp.zeros(4, jnp.int32))
        return triplet.triplet_margin_loss(ap, an) + triplet.soft_margin_triplet_loss(ap, an)

    value, grad = jax.value_and_grad(loss)(dist)
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_triplet_losses_match_numpy():
    rng = np.random.default_rng(3)
    ap = rng.uniform(0, 2, size=9).astype(np.float32)
    an = rng.uniform(0, 2, size=9).astype(np.float32)
    an[4] = np.inf
    got = triplet.triplet_margin_loss(jnp.asarray(ap), jnp.asarray(an), margin=0.3)
    want = np.mean([max(0.0, 0.3 + a - n) for a, n in zip(ap, an, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    soft = triplet.soft_margin_triplet_loss(jnp.asarray(ap), jnp.asarray(an))
    np.testing.assert_allclose(
        soft, np.mean(np.log1p(np.exp(ap - an.astype(np.float64)))), rtol=1e-6
    )


def test_global_triplet_gradient_hits_only_mined_entries():
    rng = np.random.default_rng(4)
    b = 8
    dist = rng.uniform(0.1, 2.0, size=(b, b)).astype(np.float32)
    np.fill_diagonal(dist, 0.0)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])

    def loss(d):
        ap, an, _, _ = triplet.hard_example_mining(d, jnp.asarray(labels))
        return triplet.triplet_margin_loss(ap, an, margin=0.3)

    grad = jax.jit(jax.grad(loss))(jnp.asarray(dist))
    pos_d, neg_d, pos_i, neg_i = _np_hard_mining(dist, labels)
    want = np.zeros((b, b))
    for i in range(b):
        if 0.3 + pos_d[i] - neg_d[i] > 0:
            want[i, pos_i[i]] += 1 / b
            want[i, neg_i[i]] -= 1 / b
    assert np.any(want != 0)
    np.testing.assert_allclose(grad, want, atol=1e-7)


@pytest.fixture(scope="module")
def local_loss_and_grad():
    return jax.jit(
        jax.value_and_grad(lambda x, p, n: triplet.local_triplet_loss(x, p, n, margin=0.3))
    )


def test_local_triplet_loss_matches_numpy(local_loss_and_grad):
    rng = np.random.default_rng(5)
    b, k, dl = 8, 4, 3
    feats = rng.normal(size=(b, k, dl)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    global_dist = rng.uniform(size=(b, b)).astype(np.float32)
    _, _, pos_i, neg_i = _np_hard_mining(global_dist, labels)
    neg_i[5] = 5  # "no negative" sentinel from hard_example_mining: contributes 0
    value, grad = local_loss_and_grad(jnp.asarray(feats), jnp.asarray(pos_i), jnp.asarray(neg_i))
    hinges = [
        0.0
        if neg_i[i] == i
        else max(
            0.0,
            0.3
            + _np_aligned_local(feats[i], feats[pos_i[i]])
            - _np_aligned_local(feats[i], feats[neg_i[i]]),
        )
        for i in range(b)
    ]
    assert np.count_nonzero(hinges) >= 2
    np.testing.assert_allclose(value, np.mean(hinges), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("scale", [0.0, 1e3])
def test_local_triplet_gradient_is_finite(local_loss_and_grad, scale):
    """Identical inputs (all stripe distances at the clamp) and huge distances (tanh saturates)."""
    rng = np.random.default_rng(6)
    b, k, dl = 8, 4, 3
    base = rng.normal(size=(1, 1, dl))
    feats = np.broadcast_to(base, (b, k, dl)) + scale * rng.normal(size=(b, k, dl))
    pos_i = np.array([0, 0, 3, 2, 5, 4, 7, 6])
    neg_i = np.array([2, 3, 4, 5, 6, 7, 0, 1])
    value, grad = local_loss_and_grad(jnp.asarray(feats, jnp.float32), pos_i, neg_i)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    if scale == 0.0:
        np.testing.assert_allclose(value, 0.3, atol=1e-3)  # DL(a, p) = DL(a, n) ~ 0


def test_hard_example_mining_vmaps_over_groups():
    rng = np.random.default_rng(7)
    dist = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=(3, 6))
    got = jax.vmap(triplet.hard_example_mining)(jnp.asarray(dist), jnp.asarray(labels))
    for g in range(3):
        want = _np_hard_mining(dist[g], labels[g])
        for got_part, want_part in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(got_part[g]), want_part)
