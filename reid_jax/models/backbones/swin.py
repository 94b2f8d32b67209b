"""Swin Transformer image encoder as APTM uses it: Swin-B at 384 x 128 with window 8 (aptm §3.1).

Per stage the window is clipped to the smaller side of the feature map and the cyclic shift is
disabled when the map is not larger than the window (timm 0.4.9 / Microsoft rule, aptm §8.8):
at 384 x 128 stages 1-2 shift by 4 in every second block, stage 3 (24 x 8) never shifts and
stage 4 (12 x 4) uses 4 x 4 windows. The output prepends the mean of the final tokens, which
plays the role of [CLS] (aptm §8.6.2).

Parameter names (a file format) follow the Microsoft / timm 0.4.9 state dict, with a numeric
name segment joined to its parent by ``_`` and Linear weights transposed::

    state-dict name                                   Flax path
    patch_embed.proj.weight  [C, 3, p, p]             patch_embed/proj/kernel  [p, p, 3, C]
    patch_embed.norm.{weight,bias}                    patch_embed/norm/{scale,bias}
    layers.{s}.blocks.{i}.norm{1,2}.*                 layers_{s}/blocks_{i}/norm{1,2}/*
    layers.{s}.blocks.{i}.attn.qkv.*  [3C, C]         layers_{s}/blocks_{i}/attn/qkv/*  [C, 3C]
    layers.{s}.blocks.{i}.attn.proj.*                 layers_{s}/blocks_{i}/attn/proj/*
    layers.{s}.blocks.{i}.attn.relative_position_bias_table   .../attn/relative_position_bias_table
    layers.{s}.blocks.{i}.mlp.fc{1,2}.*               layers_{s}/blocks_{i}/mlp/fc{1,2}/*
    layers.{s}.downsample.reduction.weight            layers_{s}/downsample/reduction/kernel
    layers.{s}.downsample.norm.*                      layers_{s}/downsample/norm/*
    norm.*                                            norm/*
    *.relative_position_index, *.attn_mask, head.*    (recomputed / dropped)

Images are NHWC. ``remat=True`` recomputes every block in the backward pass; blocks keep their
names, so parameter paths do not change.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# timm's trunc_normal_(std=.02) for Linear layers and relative-position tables.
dense_init = nn.initializers.truncated_normal(0.02)
exact_gelu = functools.partial(nn.gelu, approximate=False)  # aptm §8.4: erf GELU
SHIFT_MASK_VALUE = -100.0  # aptm §8.4


def block_geometry(resolution: tuple[int, int], window_size: int, index: int) -> tuple[int, int]:
    """Window and shift of one block (timm 0.4.9 rule, aptm §3.1).

    Args:
      resolution: (H, W) of the stage's token map.
      window_size: configured window.
      index: block index within the stage (odd blocks shift).

    Returns:
      (window, shift): window clipped to min(H, W); shift 0 where min(H, W) <= window.
    """
    if min(resolution) <= window_size:
        return min(resolution), 0
    return window_size, 0 if index % 2 == 0 else window_size // 2


def relative_position_index(window: int) -> np.ndarray:
    """[w*w, w*w] int32 index into the (2w-1)^2-row bias table for each token pair."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return (relative[..., 0] * (2 * window - 1) + relative[..., 1]).astype(np.int32)


def window_partition(x: jnp.ndarray, window: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B * nW, w*w, C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: jnp.ndarray, window: int, h: int, w: int) -> jnp.ndarray:
    """[B * nW, w*w, C] -> [B, H, W, C] (inverse of ``window_partition``)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(resolution: tuple[int, int], window: int, shift: int) -> np.ndarray:
    """[nW, w*w, w*w] float32 additive mask: -100 between tokens of different source regions
    after the cyclic roll by -shift (all zeros when shift is 0)."""
    h, w = resolution
    regions = np.zeros((h, w), np.float32)
    if shift:
        slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        count = 0
        for hs in slices:
            for ws in slices:
                regions[hs, ws] = count
                count += 1
    ids = regions.reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3)
    ids = ids.reshape(-1, window * window)  # [nW, w*w], as window_partition orders them
    different = ids[:, None, :] != ids[:, :, None]
    return np.where(different, SHIFT_MASK_VALUE, 0.0).astype(np.float32)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative-position bias.

    Attributes:
      dim: channels C.
      num_heads: heads (C must divide evenly).
      window: window side w.
      dtype: compute dtype (bias, mask and softmax stay float32).
    """

    dim: int
    num_heads: int
    window: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: np.ndarray | None) -> jnp.ndarray:
        """Attends within each window.

        Args:
          x: [B * nW, N, C] window tokens, N = w*w.
          mask: [nW, N, N] additive float32 mask or None.

        Returns:
          [B * nW, N, C].
        """
        bw, n, c = x.shape
        head_dim = c // self.num_heads
        table = self.param(
            "relative_position_bias_table",
            dense_init,
            ((2 * self.window - 1) ** 2, self.num_heads),
            jnp.float32,
        )
        qkv = nn.Dense(3 * c, kernel_init=dense_init, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(bw, n, 3, self.num_heads, head_dim), 2, 0)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * head_dim**-0.5, k).astype(jnp.float32)
        bias = table[relative_position_index(self.window)]  # [N, N, heads]
        logits = logits + jnp.transpose(bias, (2, 0, 1))[None]
        if mask is not None:
            windows = mask.shape[0]
            logits = logits.reshape(bw // windows, windows, self.num_heads, n, n)
            logits = (logits + jnp.asarray(mask)[None, :, None]).reshape(bw, self.num_heads, n, n)
        probs = nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(bw, n, c)
        return nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="proj")(out)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention block plus MLP, with stochastic depth.

    Attributes:
      dim: channels C.
      num_heads: attention heads.
      resolution: (H, W) of the token map.
      window: window side (already clipped).
      shift: cyclic shift (0 = none).
      mlp_ratio: hidden width of the MLP as a multiple of C.
      drop_path_rate: probability of dropping each residual branch per sample.
      dtype: compute dtype.
    """

    dim: int
    num_heads: int
    resolution: tuple[int, int]
    window: int
    shift: int = 0
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Applies the block.

        Args:
          x: [B, H*W, C] tokens in row-major order.
          train: enables stochastic depth (needs the 'dropout' rng when the rate is > 0).

        Returns:
          [B, H*W, C].
        """
        b, _, c = x.shape
        h, w = self.resolution
        # Per-sample residual drop rescaled by 1/keep (timm DropPath).
        drop_path = nn.Dropout(self.drop_path_rate, broadcast_dims=(1, 2), deterministic=not train)
        y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm1")(x).reshape(b, h, w, c)
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
        mask = shifted_window_mask(self.resolution, self.window, self.shift) if self.shift else None
        y = WindowAttention(c, self.num_heads, self.window, self.dtype, name="attn")(
            window_partition(y, self.window), mask
        )
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        x = x + drop_path(y.reshape(b, h * w, c))
        y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm2")(x)
        y = Mlp(int(c * self.mlp_ratio), self.dtype, name="mlp")(y)
        return x + drop_path(y)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (output width = input width).

    Attributes:
      hidden: inner width.
      dtype: compute dtype.
    """

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[..., C] -> [..., C]."""
        y = nn.Dense(self.hidden, kernel_init=dense_init, dtype=self.dtype, name="fc1")(x)
        y = exact_gelu(y)
        return nn.Dense(x.shape[-1], kernel_init=dense_init, dtype=self.dtype, name="fc2")(y)


class PatchMerging(nn.Module):
    """2 x 2 neighbourhood -> LayerNorm(4C) -> Linear(4C -> 2C, no bias).

    The concatenation order (even row, even col), (odd, even), (even, odd), (odd, odd) is the
    Microsoft one; converted weights depend on it (aptm §3.1).

    Attributes:
      resolution: (H, W) of the input token map.
      dtype: compute dtype.
    """

    resolution: tuple[int, int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, H*W, C] -> [B, H/2 * W/2, 2C]."""
        b, _, c = x.shape
        h, w = self.resolution
        x = x.reshape(b, h, w, c)
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        x = jnp.concatenate(parts, axis=-1).reshape(b, (h // 2) * (w // 2), 4 * c)
        x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)
        return nn.Dense(
            2 * c, use_bias=False, kernel_init=dense_init, dtype=self.dtype, name="reduction"
        )(x)


class SwinTransformer(nn.Module):
    """Swin image encoder returning the mean token followed by the final tokens.

    Attributes:
      image_size: (H, W) input size; both divisible by patch_size * 2**(stages - 1).
      patch_size: patch-embedding stride.
      embed_dim: channels of stage 1 (doubled per stage).
      depths: blocks per stage.
      num_heads: heads per stage.
      window_size: configured window (clipped per stage, see ``block_geometry``).
      mlp_ratio: MLP width multiple.
      drop_path_rate: stochastic-depth rate of the last block; rises linearly from 0.
      dtype: compute dtype (params, norm statistics and softmax stay float32).
      remat: recompute each block in the backward pass (same parameter paths).
    """

    image_size: tuple[int, int] = (384, 128)
    patch_size: int = 4
    embed_dim: int = 128
    depths: Sequence[int] = (2, 2, 18, 2)
    num_heads: Sequence[int] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def num_features(self) -> int:
        """Output width D = embed_dim * 2**(stages - 1) (1024 for Swin-B)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Encodes images.

        Args:
          images: [B, H, W, 3] normalised images, (H, W) = image_size.
          train: enables stochastic depth ('dropout' rng).

        Returns:
          'image_tokens': [B, 1 + N, D]; token 0 is the mean of the N = H*W / (patch * 2**(S-1))**2
            final tokens (row-major), D = ``num_features``.
        """
        if tuple(images.shape[1:3]) != tuple(self.image_size):
            raise ValueError(f"Swin expects images of {self.image_size}, got {images.shape[1:3]}")
        x = PatchEmbed(self.patch_size, self.embed_dim, self.dtype, name="patch_embed")(images)
        resolution = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
        for stage, (depth, heads) in enumerate(zip(self.depths, self.num_heads, strict=True)):
            first = sum(self.depths[:stage])
            x = SwinStage(
                depth=depth,
                num_heads=heads,
                resolution=resolution,
                window_size=self.window_size,
                mlp_ratio=self.mlp_ratio,
                drop_path_rates=tuple(rates[first : first + depth]),
                downsample=stage < len(self.depths) - 1,
                dtype=self.dtype,
                remat=self.remat,
                name=f"layers_{stage}",
            )(x, train=train)
            if stage < len(self.depths) - 1:
                resolution = (resolution[0] // 2, resolution[1] // 2)
        x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)
        mean = jnp.mean(x.astype(jnp.float32), axis=1, keepdims=True).astype(x.dtype)
        return {"image_tokens": jnp.concatenate([mean, x], axis=1)}


class PatchEmbed(nn.Module):
    """Non-overlapping patch convolution followed by LayerNorm.

    Attributes:
      patch_size: kernel and stride p.
      embed_dim: output channels C.
      dtype: compute dtype.
    """

    patch_size: int
    embed_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """[B, H, W, 3] -> [B, H/p * W/p, C] (row-major)."""
        p = self.patch_size
        x = nn.Conv(
            self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="proj"
        )(images)
        x = x.reshape(x.shape[0], -1, self.embed_dim)
        return nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)


class SwinStage(nn.Module):
    """One stage: ``depth`` blocks, then an optional patch merging.

    Attributes:
      depth: number of blocks.
      num_heads: attention heads.
      resolution: (H, W) of the stage's token map.
      window_size: configured window (clipped by ``block_geometry``).
      mlp_ratio: MLP width multiple.
      drop_path_rates: per-block stochastic-depth rates (length ``depth``).
      downsample: end with a ``PatchMerging``.
      dtype: compute dtype.
      remat: recompute each block in the backward pass.
    """

    depth: int
    num_heads: int
    resolution: tuple[int, int]
    window_size: int
    mlp_ratio: float
    drop_path_rates: tuple[float, ...]
    downsample: bool
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[B, H*W, C] -> [B, H*W, C], or [B, H/2 * W/2, 2C] with ``downsample``."""
        for index in range(self.depth):
            window, shift = block_geometry(self.resolution, self.window_size, index)
            make_block = functools.partial(
                SwinBlock,
                x.shape[-1],
                self.num_heads,
                self.resolution,
                window,
                shift,
                self.mlp_ratio,
                self.drop_path_rates[index],
                self.dtype,
                name=f"blocks_{index}",
            )

            def run(module: nn.Module, inputs: jnp.ndarray, make_block=make_block) -> jnp.ndarray:
                del module  # the scope nn.remat lifts; the block binds to it on construction
                return make_block()(inputs, train=train)

            x = (nn.remat(run) if self.remat else run)(self, x)
        if self.downsample:
            x = PatchMerging(self.resolution, self.dtype, name="downsample")(x)
        return x
