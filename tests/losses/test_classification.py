"""Tests for reid_jax.losses.classification against NumPy cross-entropy (ssan §3.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.losses import classification


def _np_cross_entropy(logits, labels, smoothing=0.0):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    num_classes = logits.shape[-1]
    target = np.full(logits.shape, smoothing / num_classes)
    flat_target = target.reshape(-1, num_classes)
    for row, label in enumerate(np.asarray(labels).reshape(-1)):
        flat_target[row, label] += 1.0 - smoothing
    return float(np.mean(-(target * log_probs).sum(axis=-1)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(6,), (4, 3)])
def test_softmax_cross_entropy_matches_numpy(shape, smoothing):
    rng = np.random.default_rng(len(shape))
    logits = rng.normal(scale=5.0, size=shape + (7,)).astype(np.float32)
    logits[..., 0] += 80.0  # large logits: the log-sum-exp must stay stable
    labels = rng.integers(0, 7, size=shape)
    got = classification.softmax_cross_entropy(
        jnp.asarray(logits), jnp.asarray(labels), label_smoothing=smoothing
    )
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_cross_entropy(logits, labels, smoothing), rtol=1e-5)


def test_softmax_cross_entropy_bfloat16_logits_use_float32_math():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(5, 300)), jnp.bfloat16)
    labels = rng.integers(0, 300, size=5)
    got = classification.softmax_cross_entropy(logits, jnp.asarray(labels))
    assert got.dtype == jnp.float32
    want = _np_cross_entropy(np.asarray(logits.astype(jnp.float32)), labels)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_softmax_cross_entropy_out_of_range_label_is_nan():
    logits = jnp.zeros((3, 4))
    for bad in (-1, 4):
        got = classification.softmax_cross_entropy(logits, jnp.asarray([0, bad, 2]))
        assert np.isnan(float(got))


def test_softmax_cross_entropy_gradient_matches_softmax_minus_target():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 2])
    grad = jax.jit(jax.grad(classification.softmax_cross_entropy))(
        jnp.asarray(logits), jnp.asarray(labels)
    )
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, (probs - np.eye(5)[labels]) / 4, atol=1e-6)


def test_part_identity_loss_is_mean_over_parts_of_batch_mean():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 6, 9)).astype(np.float32)
    labels = rng.integers(0, 9, size=4)
    got = classification.part_identity_loss(jnp.asarray(logits), jnp.asarray(labels))
    per_part = [_np_cross_entropy(logits[:, k], labels) for k in range(6)]
    np.testing.assert_allclose(got, np.mean(per_part), rtol=1e-5)
