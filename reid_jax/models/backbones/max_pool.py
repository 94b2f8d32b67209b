"""Max pooling with a hand-written gradient: the ResNet stem's 3x3, stride-2 pool.

The forward pass is ``nn.max_pool`` (padding with -inf, as PyTorch's ``MaxPool2d``). The
gradient routes each output's cotangent to the first maximum of its window in row-major
order, which is PyTorch's choice (a NaN counts as the maximum, as in PyTorch). It is written as
k * k strided slices, compares and strided pads that XLA fuses into elementwise loops.
XLA:CPU lowers the default gradient (``select_and_scatter``) to a variadic reduce-window over
four index arrays and a scatter: for the SSAN stem at batch 8 (192 x 64 x 64 x 64), 77-89 ms
against 37-53 ms this way when timed alone (``benchmarks/RESULTS.md``, "SSAN train step").
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int) -> jnp.ndarray:
    """Square max pooling over the two spatial axes.

    Args:
      x: [B, H, W, C] input.
      window: k, the window's height and width.
      stride: s along both axes.
      padding: p, padded on every side with -inf (never the maximum).

    Returns:
      [B, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, C].
    """
    return nn.max_pool(
        x,
        window_shape=(window, window),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
    )


def _max_pool_fwd(x, window, stride, padding):
    pooled = max_pool(x, window, stride, padding)
    return pooled, (x, pooled)


def _max_pool_bwd(window, stride, padding, residuals, grad):
    x, pooled = residuals
    batch, height, width, channels = x.shape
    out_h, out_w = pooled.shape[1:3]
    padded = jnp.pad(
        x,
        ((0, 0), (padding, padding), (padding, padding), (0, 0)),
        constant_values=-jnp.inf,
    )
    padded_h, padded_w = padded.shape[1:3]
    taken = jnp.zeros(pooled.shape, bool)
    grad_padded = jnp.zeros(padded.shape, grad.dtype)
    zero = jnp.zeros((), grad.dtype)
    for row in range(window):
        for col in range(window):
            last_row = row + stride * (out_h - 1)
            last_col = col + stride * (out_w - 1)
            values = lax.slice(
                padded,
                (0, row, col, 0),
                (batch, last_row + 1, last_col + 1, channels),
                (1, stride, stride, 1),
            )
            hit = ((values == pooled) | jnp.isnan(values)) & ~taken
            taken = taken | hit
            grad_padded = grad_padded + lax.pad(
                jnp.where(hit, grad, zero),
                zero,
                (
                    (0, 0, 0),
                    (row, padded_h - 1 - last_row, stride - 1),
                    (col, padded_w - 1 - last_col, stride - 1),
                    (0, 0, 0),
                ),
            )
    return (grad_padded[:, padding : padding + height, padding : padding + width],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
