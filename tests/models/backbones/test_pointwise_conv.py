"""1x1 convolutions as matrix products equal lax.conv_general_dilated, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from reid_jax.models.backbones import pointwise_conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _both(x, kernel, strides, padding, **kwargs):
    def reference(x, kernel):
        return lax.conv_general_dilated(
            x, kernel, strides, padding, dimension_numbers=NHWC, **kwargs
        )

    def ours(x, kernel):
        return pointwise_conv.conv_general_dilated(
            x, kernel, strides, padding, dimension_numbers=NHWC, **kwargs
        )

    return reference, ours


@pytest.mark.parametrize(
    "shape, strides, padding",
    [
        ((2, 7, 5, 6), (1, 1), ((0, 0), (0, 0))),
        ((2, 7, 5, 6), (2, 2), ((0, 0), (0, 0))),  # odd sizes: ceil(7 / 2) rows
        ((1, 8, 6, 3), (2, 1), "VALID"),
        ((3, 4, 4, 5), (2, 2), "SAME"),
    ],
)
def test_pointwise_values_and_gradients_match_convolution(shape, strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(1, 1, shape[-1], 4)), jnp.float32)
    reference, ours = _both(x, kernel, strides, padding, precision=lax.Precision.HIGHEST)
    expected = reference(x, kernel)
    np.testing.assert_allclose(ours(x, kernel), expected, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    expected_grads = jax.vjp(reference, x, kernel)[1](cotangent)
    grads = jax.jit(lambda x, k, g: jax.vjp(ours, x, k)[1](g))(x, kernel, cotangent)
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_the_primal_dtypes():
    x = jnp.ones((2, 4, 4, 8), jnp.bfloat16)
    kernel = jnp.ones((1, 1, 8, 3), jnp.bfloat16)
    _, ours = _both(x, kernel, (1, 1), "VALID")
    grads = jax.grad(lambda x, k: jnp.sum(ours(x, k).astype(jnp.float32)), argnums=(0, 1))(
        x, kernel
    )
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
    np.testing.assert_array_equal(np.asarray(grads[1], np.float32), np.full((1, 1, 8, 3), 32.0))


@pytest.mark.parametrize(
    "kernel_shape, padding, kwargs",
    [
        ((3, 3, 4, 2), ((1, 1), (1, 1)), {}),  # larger kernel
        ((1, 1, 4, 2), ((1, 1), (0, 0)), {}),  # padded 1x1
        ((1, 1, 2, 2), ((0, 0), (0, 0)), {"feature_group_count": 2}),  # grouped
        ((1, 1, 4, 2), ((0, 0), (0, 0)), {"lhs_dilation": (2, 2)}),  # transposed-conv style
    ],
)
def test_other_convolutions_fall_back_to_lax(kernel_shape, padding, kwargs):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    reference, ours = _both(x, kernel, (1, 1), padding, **kwargs)
    np.testing.assert_array_equal(ours(x, kernel), reference(x, kernel))


def test_flax_conv_keeps_its_parameters():
    x = jnp.ones((1, 6, 4, 3))
    plain = nn.Conv(5, (1, 1), strides=(2, 2), padding="VALID", use_bias=False)
    fast = nn.Conv(
        5,
        (1, 1),
        strides=(2, 2),
        padding="VALID",
        use_bias=False,
        conv_general_dilated=pointwise_conv.conv_general_dilated,
    )
    variables = plain.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, variables
    )
    np.testing.assert_allclose(
        fast.apply(variables, x), plain.apply(variables, x), rtol=1e-6, atol=1e-6
    )
