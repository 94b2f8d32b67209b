"""ResNet-18/34/50 trunks (torchvision v1.5 layout) without the average pool and classifier.

The layout follows torchvision exactly so that ImageNet weights convert 1:1 (ssan §2.1, §7.3;
alignedreid §2.1): bottleneck blocks put the stride on the 3x3 convolution ("v1.5"), and every
convolution pads explicitly and symmetrically like PyTorch (``"SAME"`` pads asymmetrically for
stride 2 on even sizes and would silently change pretrained outputs).

Parameter names (a file format; ``{s}`` = stage 1..4, ``{i}`` = block index from 0)::

    torchvision state-dict name              Flax path (collection)
    conv1.weight            [O, I, 7, 7]     conv1/kernel              [7, 7, I, O]  (params)
    bn1.weight / bn1.bias   [C]              bn1/scale, bn1/bias       [C]           (params)
    bn1.running_mean / _var [C]              bn1/mean, bn1/var         [C]     (batch_stats)
    layer{s}.{i}.conv{j}.weight              layer{s}_{i}/conv{j}/kernel   (OIHW -> HWIO)
    layer{s}.{i}.bn{j}.*                     layer{s}_{i}/bn{j}/*          (j = 1, 2[, 3])
    layer{s}.{i}.downsample.0.weight         layer{s}_{i}/downsample_conv/kernel
    layer{s}.{i}.downsample.1.*              layer{s}_{i}/downsample_bn/*
    bn*.num_batches_tracked, fc.*            (dropped)

BatchNorm uses eps 1e-5 and Flax momentum 0.9 (= PyTorch momentum 0.1). Flax updates the
running variance with the biased batch variance, PyTorch with the unbiased one; this only
matters for bit-exact running statistics (ssan §7.3).

``remat=True`` wraps every residual block in ``nn.remat``: only block inputs are kept for the
backward pass and each block's inside is recomputed, i.e. one more trunk forward (ResNet-50,
batch 64, 384 x 128: 1.49 -> 1.96 TFLOP and 7.75 -> 2.43 GiB of XLA temporaries for the trunk's
gradient). The lifted function creates the block under the same name, so parameter paths,
outputs and gradients are unchanged. XLA:CPU drops remat's optimization barriers and merges the
recomputation back unless the jit gets ``training.xla_options.CPU_REMAT_OPTIONS``.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from reid_jax.models.backbones import max_pool, pointwise_conv

# torchvision ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``: N(0, 2 / (O * kh * kw)).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def scaled_width(channels: int, width_multiplier: float) -> int:
    """Scales a channel count for thin test models.

    Args:
      channels: channel count of the full-width network.
      width_multiplier: scale factor (1.0 = torchvision).

    Returns:
      ``max(8, round(channels * width_multiplier))``.
    """
    return max(8, int(round(channels * width_multiplier)))


def resnet_output_channels(depth: int, width_multiplier: float = 1.0) -> int:
    """Channel count C of the trunk's output feature map.

    Args:
      depth: 18, 34 or 50.
      width_multiplier: as in ``ResNet``.

    Returns:
      C, e.g. 2048 for ResNet-50 and 512 for ResNet-18 at full width.
    """
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
    expansion = 4 if depth == 50 else 1
    return scaled_width(STAGE_WIDTHS[-1], width_multiplier) * expansion


def _batch_norm(name: str, train: bool, dtype: Any) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        name=name,
    )


def _conv(features: int, size: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    pad = (size - 1) // 2
    return nn.Conv(
        features,
        (size, size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=conv_kernel_init,
        dtype=dtype,
        conv_general_dilated=pointwise_conv.conv_general_dilated,
        name=name,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual (ResNet-18/34).

    Attributes:
      planes: output channels.
      stride: stride of the first 3x3 convolution.
      dtype: compute dtype.
    """

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Applies the block.

        Args:
          x: [B, H, W, C_in] input.
          train: batch statistics (True) or running statistics (False).

        Returns:
          [B, H / stride, W / stride, planes].
        """
        y = _conv(self.planes, 3, self.stride, self.dtype, "conv1")(x)
        y = nn.relu(_batch_norm("bn1", train, self.dtype)(y))
        y = _conv(self.planes, 3, 1, self.dtype, "conv2")(y)
        y = _batch_norm("bn2", train, self.dtype)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = _conv(self.planes, 1, self.stride, self.dtype, "downsample_conv")(x)
            shortcut = _batch_norm("downsample_bn", train, self.dtype)(shortcut)
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 bottleneck with a residual (ResNet-50).

    Attributes:
      planes: inner channels; the block outputs ``4 * planes``.
      stride: stride of the 3x3 convolution.
      dtype: compute dtype.
    """

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Applies the block.

        Args:
          x: [B, H, W, C_in] input.
          train: batch statistics (True) or running statistics (False).

        Returns:
          [B, H / stride, W / stride, 4 * planes].
        """
        out_channels = 4 * self.planes
        y = _conv(self.planes, 1, 1, self.dtype, "conv1")(x)
        y = nn.relu(_batch_norm("bn1", train, self.dtype)(y))
        y = _conv(self.planes, 3, self.stride, self.dtype, "conv2")(y)
        y = nn.relu(_batch_norm("bn2", train, self.dtype)(y))
        y = _conv(out_channels, 1, 1, self.dtype, "conv3")(y)
        y = _batch_norm("bn3", train, self.dtype)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_channels:
            shortcut = _conv(out_channels, 1, self.stride, self.dtype, "downsample_conv")(x)
            shortcut = _batch_norm("downsample_bn", train, self.dtype)(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """torchvision ResNet trunk: stem, max-pool and four stages, no pooling head.

    Attributes:
      depth: 18, 34 or 50.
      width_multiplier: channel scale for tiny test models (rounded, at least 8 per stage).
      last_stride: stride of stage 4 (2 as torchvision; 1 is the "last-stride trick").
      dtype: compute dtype (parameters and BatchNorm statistics stay float32).
      remat: recompute each residual block's activations in the backward pass (saves memory,
        costs one extra block forward in training; no effect without gradients).
    """

    depth: int = 50
    width_multiplier: float = 1.0
    last_stride: int = 2
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Computes the last feature map.

        Args:
          images: [B, H, W, 3] float, already normalised.
          train: batch statistics and running-stat updates (True) or running statistics.

        Returns:
          {'feature_map': [B, H/32, W/32, C]} (H/16, W/16 with ``last_stride=1``), with
          C = ``resnet_output_channels(depth, width_multiplier)``, in ``dtype``.
        """
        if self.depth not in STAGE_BLOCKS:
            raise ValueError(
                f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {self.depth}"
            )
        block_cls = Bottleneck if self.depth == 50 else BasicBlock
        x = jnp.asarray(images, self.dtype)
        x = _conv(scaled_width(64, self.width_multiplier), 7, 2, self.dtype, "conv1")(x)
        x = nn.relu(_batch_norm("bn1", train, self.dtype)(x))
        # PyTorch MaxPool2d(3, 2, padding=1): -inf padding, gradient to the first maximum.
        x = max_pool.max_pool(x, 3, 2, 1)
        strides: Sequence[int] = (1, 2, 2, self.last_stride)
        for stage, (blocks, width, stride) in enumerate(
            zip(STAGE_BLOCKS[self.depth], STAGE_WIDTHS, strides, strict=True), start=1
        ):
            planes = scaled_width(width, self.width_multiplier)
            for index in range(blocks):
                make_block = functools.partial(
                    block_cls,
                    planes,
                    stride=stride if index == 0 else 1,
                    dtype=self.dtype,
                    name=f"layer{stage}_{index}",
                )
                x = self._apply_block(make_block, x, train)
        return {"feature_map": x}

    def _apply_block(self, make_block: Any, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Runs one residual block, rematerialised when ``self.remat``.

        The block is constructed inside the (possibly lifted) function so that it lives in the
        lifted scope under its usual name; ``train`` stays a Python bool (closed over, static).
        """

        def run(module: nn.Module, inputs: jnp.ndarray) -> jnp.ndarray:
            del module  # the scope nn.remat lifts; the block binds to it on construction
            return make_block()(inputs, train=train)

        return (nn.remat(run) if self.remat else run)(self, x)
