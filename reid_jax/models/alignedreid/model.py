"""AlignedReID: ResNet trunk with a global feature, horizontal-stripe local features and an ID head.

Facts: alignedreid §2 (the re-production: average pooling, H stripes = feature-map rows, e.g.
8 for 256 x 128 input; the paper's max-pooling variant is an option).

Parameter tree (a file format; PyTorch names of the re-production in brackets)::

    backbone/...                        ResNet trunk (see backbones/resnet.py)  [base.*]
    local_conv/{kernel [C, c], bias [c]}  1x1 conv C -> c   [local_conv.weight [c, C, 1, 1], .bias]
    local_bn/{scale, bias} (params), local_bn/{mean, var} (batch_stats)   [local_bn.*]
    classifier/{kernel [C, N], bias [N]}                                   [fc.weight^T, fc.bias]
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.models.backbones.resnet import ResNet

POOLS = ("avg", "max")


def _uniform_fan_in(fan_in: int):
    # PyTorch's default conv init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / fan_in**0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _pool(x: jnp.ndarray, axis: Any, kind: str) -> jnp.ndarray:
    return jnp.mean(x, axis=axis) if kind == "avg" else jnp.max(x, axis=axis)


class AlignedReidModel(nn.Module):
    """AlignedReID network (alignedreid §2).

    Attributes:
      num_classes: N training identities of the ID classifier.
      local_dim: c, channels of each local (stripe) feature.
      backbone_depth: ResNet depth (50 in the paper).
      width_multiplier: ResNet width multiplier (tests only).
      last_stride: stride of ResNet stage 4 (2: 8 x 4 map for 256 x 128 input).
      global_pool: 'avg' (re-production) or 'max' over all positions for the global feature.
      local_pool: 'avg' (re-production) or 'max' (paper) over the width of each row.
      dtype: compute dtype; params, BN statistics and the returned arrays are float32.
    """

    num_classes: int
    local_dim: int = 128
    backbone_depth: int = 50
    width_multiplier: float = 1.0
    last_stride: int = 2
    global_pool: str = "avg"
    local_pool: str = "avg"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Computes global, local and classifier outputs.

        Args:
          images: [B, H, W, 3] float, normalised (256 x 128 in the re-production).
          train: batch statistics + running-stat updates (apply with
            ``mutable=['batch_stats']``) or running statistics.

        Returns:
          {'global': [B, C] raw pooled trunk feature (C = 2048 at full width),
           'local': [B, S, c] post-ReLU stripe features, S = H/32 rows, top to bottom,
           'logits': [B, N]}, all float32.
        """
        for name, kind in (("global_pool", self.global_pool), ("local_pool", self.local_pool)):
            if kind not in POOLS:
                raise ValueError(f"AlignedReidModel.{name} must be one of {POOLS}, got {kind!r}")
        feature_map = ResNet(
            self.backbone_depth,
            self.width_multiplier,
            self.last_stride,
            dtype=self.dtype,
            name="backbone",
        )(images, train=train)["feature_map"]  # [B, S, W', C]
        global_feat = _pool(feature_map.astype(jnp.float32), (1, 2), self.global_pool)
        rows = _pool(feature_map, 2, self.local_pool)  # [B, S, C]
        fan_in = feature_map.shape[-1]
        local = nn.Dense(
            self.local_dim,
            kernel_init=_uniform_fan_in(fan_in),
            bias_init=_uniform_fan_in(fan_in),
            dtype=self.dtype,
            name="local_conv",
        )(rows)
        # Statistics pooled over batch and stripes (BatchNorm2d on [B, c, S, 1]).
        local = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            name="local_bn",
        )(local)
        local = nn.relu(local)
        logits = nn.Dense(
            self.num_classes, kernel_init=nn.initializers.normal(stddev=0.001), name="classifier"
        )(global_feat)
        return {
            "global": global_feat,
            "local": local.astype(jnp.float32),
            "logits": logits.astype(jnp.float32),
        }
