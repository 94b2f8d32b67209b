"""Tests for reid_jax.models.ssan.word_attention (WAM) against a NumPy re-derivation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models.ssan.word_attention import WordAttention

K, D, T = 3, 8, 6


def np_word_attention(x, valid, kernel):
    """a = sigmoid(x W); s_k = max over valid words of a_k * x; 0 without valid words."""
    a = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ kernel)))  # [B, T, K]
    parts = np.zeros((x.shape[0], kernel.shape[1], x.shape[2]))
    for b in range(x.shape[0]):
        words = np.flatnonzero(valid[b])
        if words.size:
            parts[b] = (a[b, words, :, None] * x[b, words, None, :]).max(axis=0)
    return parts, a


@pytest.fixture(scope="module")
def wam():
    model = WordAttention(num_parts=K)
    params = model.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, T, D)), jnp.ones((1, T), bool))
    apply = jax.jit(lambda x, valid: model.apply(params, x, valid))
    return params["params"], apply


def test_init_is_torch_conv_default(wam):
    params, _ = wam
    assert set(params) == {"kernel"} and params["kernel"].shape == (D, K)
    bound = 1 / np.sqrt(D)
    assert np.all(np.abs(params["kernel"]) <= bound)


def test_matches_numpy_max_over_valid_words_only(wam):
    params, apply = wam
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, T, D)).astype(np.float32)
    x[1] = -np.abs(x[1])  # all-negative words: a zero-masked max would wrongly give 0
    lengths = np.array([6, 2, 1, 0])
    valid = np.arange(T)[None] < lengths[:, None]
    out = apply(x, valid)
    kernel = np.asarray(params["kernel"], np.float64)
    expected_parts, expected_attention = np_word_attention(x, valid, kernel)
    np.testing.assert_allclose(out["parts"], expected_parts, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["attention"], expected_attention, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(out["parts"])[1] < 0)
    assert np.all(np.asarray(out["parts"])[3] == 0)


def test_padded_positions_do_not_change_parts(wam):
    _, apply = wam
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, T, D)).astype(np.float32)
    valid = np.arange(T)[None] < np.array([[4], [1], [6]])
    changed = np.where(valid[..., None], x, 1e3 * rng.normal(size=x.shape)).astype(np.float32)
    np.testing.assert_array_equal(apply(x, valid)["parts"], apply(changed, valid)["parts"])
