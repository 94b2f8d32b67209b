"""1x1 convolutions as matrix products: a drop-in for ``lax.conv_general_dilated`` in ``nn.Conv``.

A 1x1 convolution with stride s over NHWC inputs and an HWIO kernel is
``x[:, ::s, ::s, :] @ kernel[0, 0]``. Written that way, its forward pass, input gradient and
kernel gradient are all plain matrix products. XLA:CPU computes the kernel gradient of a
*convolution* far more slowly: summed over ResNet-50's 1x1 layers at batch 8, 384 x 128, each
timed alone, the kernel gradients take 0.88 s as convolutions and 0.15 s as products, and the
forward pass and input gradient are each about 1.8x faster too. ResNet-50 has 36 of its 53
convolutions 1x1, so this is most of the trunk's backward pass on CPU
(``benchmarks/ssan_step_parts.py``). GPUs and TPUs lower a 1x1 convolution to a matrix
product anyway.

The products have a hand-written VJP only to fix the operand order of the kernel gradient,
``x^T @ grad``: autodiff of the einsum computes ``(grad^T @ x)^T``, and XLA:CPU then writes
the transposed cotangent inside the BatchNorm-backward fusion that produces it, strided, which
cost more than the product (ResNet-50 forward + backward 1.87 s against 1.32 s).

Parameters are untouched (``nn.Conv`` still owns the ``[1, 1, I, O]`` kernel), so pretrained
weights, checkpoints and parameter paths do not change. Any other convolution (larger
kernels, padding, dilation, groups, other layouts) goes to ``lax.conv_general_dilated``.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(dimension_numbers: Any) -> bool:
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
        return dimension_numbers == expected
    return tuple(dimension_numbers or ()) == _NHWC


def _no_padding(padding: Any) -> bool:
    if isinstance(padding, str):
        return padding.upper() in ("VALID", "SAME")  # equal for a 1x1 kernel: no padding
    return all(tuple(pair) == (0, 0) for pair in padding)


def _all_ones(values: Sequence[int] | None) -> bool:
    return values is None or all(v == 1 for v in values)


def conv_general_dilated(
    lhs: jnp.ndarray,
    rhs: jnp.ndarray,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jnp.ndarray:
    """``lax.conv_general_dilated`` with 1x1 NHWC/HWIO kernels computed as a matrix product.

    Args:
      lhs: [B, H, W, I] input (for the product path; any layout otherwise).
      rhs: [1, 1, I, O] kernel (for the product path).
      window_strides: (s_h, s_w).
      Others: as ``lax.conv_general_dilated``.

    Returns:
      [B, ceil(H / s_h), ceil(W / s_w), O] for the product path; otherwise whatever
      ``lax.conv_general_dilated`` returns.
    """
    pointwise = (
        lhs.ndim == 4
        and rhs.shape[:2] == (1, 1)
        and _is_nhwc(dimension_numbers)
        and _no_padding(padding)
        and _all_ones(lhs_dilation)
        and _all_ones(rhs_dilation)
        and feature_group_count == 1
        and batch_group_count == 1
    )
    if not pointwise:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    stride_h, stride_w = window_strides
    if (stride_h, stride_w) != (1, 1):
        lhs = lhs[:, ::stride_h, ::stride_w, :]
    out = _pointwise(lhs.reshape(-1, lhs.shape[-1]), rhs[0, 0], precision)
    return out.reshape(*lhs.shape[:-1], rhs.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x: jnp.ndarray, kernel: jnp.ndarray, precision: Any) -> jnp.ndarray:
    return lax.dot_general(x, kernel, (((1,), (0,)), ((), ())), precision=precision)


def _pointwise_fwd(x, kernel, precision):
    return _pointwise(x, kernel, precision), (x, kernel)


def _pointwise_bwd(precision, residuals, grad):
    x, kernel = residuals
    grad_x = lax.dot_general(grad, kernel, (((1,), (1,)), ((), ())), precision=precision)
    grad_kernel = lax.dot_general(x, grad, (((0,), (0,)), ((), ())), precision=precision)
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)
