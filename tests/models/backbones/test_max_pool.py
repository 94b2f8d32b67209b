"""The stem's max pool: PyTorch's values and gradients, ties and NaNs included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reid_jax.models.backbones.max_pool import max_pool


def _torch_pool_and_grad(x, cotangent, window, stride, padding):
    x_t = torch.tensor(np.transpose(x, (0, 3, 1, 2)), requires_grad=True)
    pooled = torch.nn.functional.max_pool2d(x_t, window, stride, padding)
    pooled.backward(torch.tensor(np.transpose(cotangent, (0, 3, 1, 2))))
    to_nhwc = lambda t: np.transpose(t.detach().numpy(), (0, 2, 3, 1))  # noqa: E731
    return to_nhwc(pooled), to_nhwc(x_t.grad)


def _ours(x, cotangent, window, stride, padding):
    pooled, vjp = jax.vjp(lambda x: max_pool(x, window, stride, padding), jnp.asarray(x))
    return np.asarray(pooled), np.asarray(vjp(jnp.asarray(cotangent))[0])


@pytest.mark.parametrize(
    "shape, window, stride, padding",
    [
        ((2, 9, 7, 3), 3, 2, 1),  # the ResNet stem's pool, odd sizes
        ((2, 8, 6, 3), 3, 2, 1),
        ((1, 7, 7, 2), 2, 2, 0),
        ((1, 6, 5, 2), 3, 1, 1),  # overlapping windows, stride 1
    ],
)
def test_matches_pytorch_with_ties(shape, window, stride, padding):
    rng = np.random.default_rng(0)
    # Few distinct values and many zeros (post-ReLU): most windows have tied maxima.
    x = np.maximum(rng.integers(-3, 3, shape), 0).astype(np.float32)
    probe = np.asarray(max_pool(jnp.asarray(x), window, stride, padding))
    cotangent = rng.normal(size=probe.shape).astype(np.float32)
    pooled_ref, grad_ref = _torch_pool_and_grad(x, cotangent, window, stride, padding)
    pooled, grad = _ours(x, cotangent, window, stride, padding)
    np.testing.assert_array_equal(pooled, pooled_ref)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-6, atol=1e-6)


def test_matches_xla_gradient_without_ties():
    x = jax.random.normal(jax.random.key(0), (2, 12, 10, 4))
    cotangent = jax.random.normal(jax.random.key(1), (2, 6, 5, 4))

    def reference(x):
        return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    expected = jax.vjp(reference, x)[1](cotangent)[0]
    got = jax.jit(lambda x, g: jax.vjp(lambda x: max_pool(x, 3, 2, 1), x)[1](g)[0])(x, cotangent)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # summation order


def test_nan_takes_the_gradient_like_pytorch():
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1, 2, 0] = np.nan
    x[0, 0, 0, 0] = 5.0
    cotangent = np.ones((1, 2, 2, 1), np.float32)
    pooled_ref, grad_ref = _torch_pool_and_grad(x, cotangent, 3, 2, 1)
    pooled, grad = _ours(x, cotangent, 3, 2, 1)
    np.testing.assert_array_equal(np.isnan(pooled), np.isnan(pooled_ref))
    np.testing.assert_array_equal(grad, grad_ref)
