"""Multi-View Non-Local Network (MV-NLN, the PRL branch) and per-part linear layers (ssan §2.8).

Every projection exists once per part, stored as one einsum kernel ``[K, C_in, C_out]`` (ssan
§7.3); PyTorch's six ``Conv1x1`` weights ``[C_out, C_in, 1, 1]`` map to ``kernel[k]`` transposed.

Parameter names (a file format)::

    part/kernel     [K, D, R]   P_k  "part" projection (keys and values)
    current/kernel  [K, D, R]   Q_k  "current" projection (queries)
    up/kernel       [K, R, D]   U_k  up-projection, followed by up_bn
    up_bn/{scale,bias} [K, D] (params), up_bn/{mean,var} [K, D] (batch_stats)
    output/kernel   [K, D, R]   O_k  output projection
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming normal, mode fan_out, ReLU gain, untruncated: N(0, 2 / C_out) (ssan §2.10). With the
# kernel laid out [K, C_in, C_out], fan_out is C_out and K is a batch axis.
part_kernel_init = nn.initializers.variance_scaling(
    2.0, "fan_out", "normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
)


class PartDense(nn.Module):
    """K independent linear maps, one per part, applied as one einsum.

    Parameters: ``kernel`` [K, C_in, C_out] and, with ``use_bias``, ``bias`` [K, C_out].

    Attributes:
      features: C_out.
      use_bias: whether to add a per-part bias.
      kernel_init: initialiser of the [K, C_in, C_out] kernel.
      dtype: compute dtype.
    """

    features: int
    use_bias: bool = False
    kernel_init: Any = part_kernel_init
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Applies part k's map to ``x[:, k]``.

        Args:
          x: [B, K, C_in] float.

        Returns:
          [B, K, C_out] in ``dtype``.
        """
        num_parts, in_features = x.shape[-2:]
        kernel = self.param("kernel", self.kernel_init, (num_parts, in_features, self.features))
        y = jnp.einsum("bkc,kcd->bkd", jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (num_parts, self.features))
            y = y + jnp.asarray(bias, self.dtype)
        return y


def _l2_normalise(x: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
    # The reference divides by (norm + eps), not max(norm, eps).
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


class MultiViewNonLocal(nn.Module):
    """MV-NLN: each part attends to the other parts, then a residual and a per-part projection.

    Call it separately per modality (image, caption, partner caption) so that every call uses
    its own batch statistics in training (ssan §2.8 "BatchNorm subtlety").

    Attributes:
      relation_dim: R, inner and output width (D // 2 = 512 in SSAN).
      leaky_slope: LeakyReLU negative slope (0.25).
      dtype: compute dtype; the affinity softmax and BN statistics are float32.
    """

    relation_dim: int = 512
    leaky_slope: float = 0.25
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, part_feats: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Relates the K part features of each sample.

        Args:
          part_feats: [B, K, D] activated PFL features (post-LeakyReLU).
          train: batch statistics + running-stat update (True) or running statistics.

        Returns:
          {'relation': [B, K, R] in ``dtype`` (PRL features),
           'attention': [B, K, K] float32 ``A[b, j, k]``, softmax over the source part j
           (each column k sums to 1; the diagonal is ~0)}.
        """
        num_parts, dim = part_feats.shape[-2:]
        leaky = lambda v: nn.leaky_relu(v, self.leaky_slope)
        dense = lambda features, name: PartDense(features, dtype=self.dtype, name=name)
        x = jnp.asarray(part_feats, self.dtype)
        keys = _l2_normalise(leaky(dense(self.relation_dim, "part")(x)).astype(jnp.float32))
        queries = _l2_normalise(leaky(dense(self.relation_dim, "current")(x)).astype(jnp.float32))
        affinity = jnp.einsum("bjc,bkc->bjk", keys, queries)
        affinity = affinity - 1e6 * jnp.eye(num_parts, dtype=jnp.float32)
        attention = jax.nn.softmax(affinity, axis=1)  # over the source part j
        # Values are the normalised "part" projections (no separate value projection).
        aggregated = jnp.einsum("bjk,bjc->bkc", attention, keys)  # [B, K, R]
        up = dense(dim, "up")(aggregated)
        # One BN over [B, K, D] with feature axes (1, 2) == K independent BN(D) over the batch.
        up = nn.BatchNorm(
            use_running_average=not train,
            axis=(1, 2),
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            name="up_bn",
        )(up)
        residual = x + leaky(up)
        relation = dense(self.relation_dim, "output")(residual)
        return {"relation": relation, "attention": attention}
