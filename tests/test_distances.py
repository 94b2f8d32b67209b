"""Distances against NumPy / plain-Python re-derivations, under jax.jit; finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import distances


def _np_euclid(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def _python_aligned(f, g):
    """alignedreid §3.2 with the exp form and explicit double loops, float64."""
    k = f.shape[0]
    e = _np_euclid(f, g)
    d = (np.exp(e) - 1) / (np.exp(e) + 1)
    s = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i == 0 and j == 0:
                s[i, j] = d[i, j]
            elif i == 0:
                s[i, j] = s[i, j - 1] + d[i, j]
            elif j == 0:
                s[i, j] = s[i - 1, j] + d[i, j]
            else:
                s[i, j] = min(s[i - 1, j], s[i, j - 1]) + d[i, j]
    return s[-1, -1]


@pytest.fixture(scope="module")
def fns():
    return {
        "euclid": jax.jit(distances.pairwise_euclidean),
        "sq": jax.jit(lambda x, y: distances.pairwise_euclidean(x, y, squared=True)),
        "cos": jax.jit(distances.pairwise_cosine),
        "aligned": jax.jit(distances.aligned_local_distance),
        "paired": jax.jit(distances.paired_aligned_local_distance),
    }


def test_euclidean_and_cosine_match_numpy(fns):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 16)), rng.standard_normal((5, 16))
    y[2] = x[3]  # identical pair
    ref = _np_euclid(x, y)
    got = np.asarray(fns["euclid"](x, y))
    np.testing.assert_allclose(got, np.maximum(ref, 1e-6), rtol=1e-5, atol=2e-3)
    assert got[3, 2] < 2e-3 and np.all(got > 0)
    np.testing.assert_allclose(np.asarray(fns["sq"](x, y)), ref**2, rtol=1e-5, atol=1e-4)
    assert np.all(np.asarray(fns["sq"](x, x)) >= 0)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(fns["cos"](x, y)), xn @ yn.T, atol=1e-6)
    zero = np.asarray(fns["cos"](np.zeros((1, 16)), y))
    assert np.all(np.isfinite(zero)) and np.all(zero == 0)


def test_aligned_local_distance_matches_python_dp(fns):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 6)).astype(np.float32)
    y = rng.standard_normal((3, 8, 6)).astype(np.float32)
    y[1] = x[2]
    got = np.asarray(fns["aligned"](x, y))
    ref = np.array([[_python_aligned(a, b) for b in y] for a in x])
    # The ||x||^2 + ||y||^2 - 2xy form (as the references) loses ~1e-3 on identical stripes.
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-3)
    assert np.all(got >= 0) and np.all(got < 2 * 8 - 1)
    np.testing.assert_allclose(np.asarray(fns["aligned"](y, x)), got.T, rtol=1e-6, atol=1e-6)


def test_paired_equals_diagonal_and_vmaps(fns):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 7, 4)).astype(np.float32)
    y = rng.standard_normal((5, 7, 4)).astype(np.float32)
    got = np.asarray(fns["paired"](x, y))
    ref = np.array([_python_aligned(a, b) for a, b in zip(x, y, strict=True)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    full = np.asarray(fns["aligned"](x, y))
    np.testing.assert_allclose(got, np.diag(full), rtol=1e-5, atol=1e-5)
    stacked = jax.vmap(distances.paired_aligned_local_distance)(np.stack([y, x]), np.stack([x, y]))
    np.testing.assert_allclose(np.asarray(stacked)[1], got, rtol=1e-6)


def test_large_distances_do_not_overflow(fns):
    x = np.full((1, 3, 2), 1e3, np.float32)
    y = np.full((1, 3, 2), -1e3, np.float32)  # part distances ~2828 -> exp() overflows
    got = float(fns["paired"](x, y)[0])
    assert np.isfinite(got) and abs(got - 5.0) < 1e-5  # 2K - 1 cells, each tanh -> 1


@pytest.fixture(scope="module")
def grad_fns():
    losses = (
        lambda a: distances.paired_aligned_local_distance(a, a).sum(),
        lambda a: distances.aligned_local_distance(a, -a).sum(),
        lambda a: distances.pairwise_euclidean(a[:, 0], a[:, 0]).sum(),
        lambda a: distances.pairwise_cosine(a[:, 0], a[:, 1]).sum(),
    )
    return jax.jit(lambda a: [jax.grad(f)(a) for f in losses])


@pytest.mark.parametrize("scale", [0.0, 1.0, 1e4])
def test_gradients_are_finite(grad_fns, scale):
    rng = np.random.default_rng(3)
    x = jnp.asarray(scale * rng.standard_normal((3, 4, 5)), jnp.float32)
    for g in grad_fns(x):
        assert np.all(np.isfinite(np.asarray(g)))


def test_chunked_aligned_matches_full(fns):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 4, 3)).astype(np.float32)
    y = rng.standard_normal((5, 4, 3)).astype(np.float32)
    got = distances.chunked_aligned_local_distance(x, y, block=3)
    np.testing.assert_allclose(got, np.asarray(fns["aligned"](x, y)), rtol=1e-6, atol=1e-6)
    assert got.shape == (7, 5) and got.dtype == np.float32
