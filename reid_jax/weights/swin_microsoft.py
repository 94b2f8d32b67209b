"""Swin state dicts in the Microsoft / timm 0.4.9 layout -> `models/backbones/swin.py` params.

Used for APTM's 'vision_encoder.*' and the ImageNet Swin checkpoints (whose 'model' entry holds
the state dict). The name map is the one `backbones/swin.py` documents. Relative-position index
buffers and shift masks are recomputed by the model and dropped here, as is the classifier.
Relative-position tables of another window (the ImageNet-22K Swin-B's 13 x 13 tables for
APTM's window 8: 15 x 15 in stages 1-3, 7 x 7 in the clipped stage 4) are resampled per head
when `rules` is given the target windows (aptm §3.1, `resample_relative_position_table`).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.interpolate import RectBivariateSpline

from reid_jax.models.backbones.swin import block_geometry
from reid_jax.weights.mapping import Rule, apply_rules, conv_kernel, linear_kernel
from reid_jax.weights.readers import Checkpoint, WeightsError, read_checkpoint

# BEiT's search interval for the progression ratio: a table that shrinks (13 -> 7 rows) gets
# the lower end, so its centre is sampled almost on the integer offsets (a near-crop).
_RATIO_INTERVAL = (1.01, 1.5)
_TABLE = "relative_position_bias_table"


def _warped_offsets(source_side: int, target_side: int) -> np.ndarray:
    """[source_side] float64 offsets at which the source table's rows/columns are placed.

    The gaps from the centre outwards grow geometrically (1, q, q^2, ...) with q chosen by
    bisection in `_RATIO_INTERVAL` so that the outermost offset, 1 + q + ... + q^(n-1) for
    n = source_side // 2, reaches target_side // 2: the source spans the target's integer
    offsets, densely near zero, where the bias varies most (the BEiT warp, aptm §3.1).
    """
    half = source_side // 2
    if half == 0:
        return np.zeros(1)
    reach = target_side // 2

    def outermost(ratio: float) -> float:
        return float(np.sum(ratio ** np.arange(half)))

    low, high = _RATIO_INTERVAL
    while high - low > 1e-6:
        middle = (low + high) / 2
        low, high = (low, middle) if outermost(middle) > reach else (middle, high)
    ratio = (low + high) / 2
    positive = np.cumsum(ratio ** np.arange(half))
    return np.concatenate([-positive[::-1], [0.0], positive])


def resample_relative_position_table(table: np.ndarray, window: int) -> np.ndarray:
    """Resamples a Swin relative-position bias table to another window (aptm §3.1).

    Each head's (2w - 1) x (2w - 1) grid of biases (rows: vertical offset, columns: horizontal
    offset) is placed on the geometrically warped offsets of `_warped_offsets` and read back at
    the target's integer offsets -(w' - 1) .. w' - 1 through an interpolating bicubic spline,
    `scipy.interpolate.RectBivariateSpline(kx=3, ky=3, s=0)`: the FITPACK gridded spline that
    SciPy's removed `interp2d(kind='cubic')` (used by the reference) fitted for gridded data,
    which also holds points beyond the data at the boundary value. Tables with fewer than 4 rows
    per side use the highest degree they allow. A table of the target's shape is returned as is.

    Args:
      table: [(2w - 1)^2, heads] biases of window w.
      window: target window w'.

    Returns:
      [(2w' - 1)^2, heads] float32.

    Raises:
      WeightsError: `table` does not have a square, odd number of rows.
    """
    table = np.asarray(table, np.float32)
    rows, heads = table.shape
    source_side = math.isqrt(rows)
    if source_side**2 != rows or source_side % 2 == 0:
        raise WeightsError(f"relative-position table of {rows} rows is not (2w - 1)^2")
    target_side = 2 * window - 1
    if source_side == target_side:
        return table
    if source_side == 1:
        return np.repeat(table, target_side**2, axis=0)
    offsets = _warped_offsets(source_side, target_side)
    targets = np.arange(target_side, dtype=np.float64) - (target_side // 2)
    degree = min(3, source_side - 1)
    grids = table.astype(np.float64).reshape(source_side, source_side, heads)
    resampled = np.stack(
        [
            RectBivariateSpline(offsets, offsets, grids[:, :, head], kx=degree, ky=degree, s=0)(
                targets, targets
            )
            for head in range(heads)
        ],
        axis=-1,
    )
    return resampled.reshape(target_side**2, heads).astype(np.float32)


def stage_windows(
    image_size: Sequence[int], window_size: int, num_stages: int, patch_size: int = 4
) -> list[int]:
    """The window of each stage after clipping (`backbones.swin.block_geometry`).

    Args:
      image_size: (H, W) input images.
      window_size: configured window.
      num_stages: number of stages.
      patch_size: patch-embedding stride.

    Returns:
      One window side per stage (Swin-B at 384 x 128, window 8: [8, 8, 8, 4]).
    """
    resolution = (image_size[0] // patch_size, image_size[1] // patch_size)
    windows = []
    for _ in range(num_stages):
        windows.append(block_geometry(resolution, window_size, 0)[0])
        resolution = (resolution[0] // 2, resolution[1] // 2)
    return windows


def rules(source: str = "", target: str = "", windows: Sequence[int] | None = None) -> list[Rule]:
    """The Swin name map.

    Args:
      source: regex before 'patch_embed.' / 'layers.' (e.g. '' or 'vision_encoder\\.').
      target: Flax prefix of the `SwinTransformer` ('' or 'vision_encoder/').
      windows: the target window of each stage (`stage_windows`): relative-position tables of
        another size are resampled to it. None: tables must already fit.
    """
    block = rf"{source}layers\.(\d+)\.blocks\.(\d+)"
    flax_block = f"params/{target}layers_\\1/blocks_\\2"
    merge = rf"{source}layers\.(\d+)\.downsample"
    flax_merge = f"params/{target}layers_\\1/downsample"
    flax_table = f"{flax_block}/attn/{_TABLE}"
    if windows is None:
        tables = [Rule(rf"{block}\.attn\.{_TABLE}", flax_table)]
    else:
        tables = [
            Rule(
                rf"{source}layers\.({stage})\.blocks\.(\d+)\.attn\.{_TABLE}",
                flax_table,
                functools.partial(resample_relative_position_table, window=window),
            )
            for stage, window in enumerate(windows)
        ]
    return [
        Rule(
            rf"{source}patch_embed\.proj\.weight",
            f"params/{target}patch_embed/proj/kernel",
            conv_kernel,
        ),
        Rule(rf"{source}patch_embed\.proj\.bias", f"params/{target}patch_embed/proj/bias"),
        Rule(rf"{source}patch_embed\.norm\.weight", f"params/{target}patch_embed/norm/scale"),
        Rule(rf"{source}patch_embed\.norm\.bias", f"params/{target}patch_embed/norm/bias"),
        Rule(rf"{block}\.(norm[12])\.weight", f"{flax_block}/\\3/scale"),
        Rule(rf"{block}\.(norm[12])\.bias", f"{flax_block}/\\3/bias"),
        Rule(rf"{block}\.attn\.(qkv|proj)\.weight", f"{flax_block}/attn/\\3/kernel", linear_kernel),
        Rule(rf"{block}\.attn\.(qkv|proj)\.bias", f"{flax_block}/attn/\\3/bias"),
        *tables,
        Rule(rf"{block}\.attn\.relative_position_index", ""),
        Rule(rf"{block}\.attn_mask", ""),
        Rule(rf"{block}\.mlp\.(fc[12])\.weight", f"{flax_block}/mlp/\\3/kernel", linear_kernel),
        Rule(rf"{block}\.mlp\.(fc[12])\.bias", f"{flax_block}/mlp/\\3/bias"),
        Rule(rf"{merge}\.reduction\.weight", f"{flax_merge}/reduction/kernel", linear_kernel),
        Rule(rf"{merge}\.norm\.weight", f"{flax_merge}/norm/scale"),
        Rule(rf"{merge}\.norm\.bias", f"{flax_merge}/norm/bias"),
        Rule(rf"{source}norm\.weight", f"params/{target}norm/scale"),
        Rule(rf"{source}norm\.bias", f"params/{target}norm/bias"),
        Rule(rf"{source}head\.(weight|bias)", ""),  # the ImageNet classifier
    ]


def convert(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], source: str
) -> dict[str, np.ndarray]:
    """Microsoft-layout Swin names -> flat Flax params ('params/layers_0/...').

    Args:
      tensors: the state dict (bare names, as timm 0.4.9's `SwinTransformer.state_dict()`).
      expected: flat shapes of the Flax `SwinTransformer`'s params (no prefix).
      source: file name for errors.

    Raises:
      WeightsError: unused tensors, unfilled parameters or shape mismatches (by name).
    """
    return apply_rules(tensors, rules(), expected, source)


def model_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The Swin state dict of a file: its 'model' entry (Microsoft's ImageNet releases) or the
    whole file (a bare `state_dict()`)."""
    return checkpoint.sub("model.") or dict(checkpoint.tensors)


def sizes(tensors: Mapping[str, np.ndarray]) -> dict[str, int | tuple[int, ...]]:
    """The `config.model` fields a Swin file fixes: swin_embed_dim, swin_depths, swin_num_heads
    (the window is the target's: tables are resampled; the image size is the data's).

    Raises:
      WeightsError: the file has no Swin patch embedding or blocks.
    """
    if "patch_embed.proj.weight" not in tensors:
        raise WeightsError("not a Swin state dict: no 'patch_embed.proj.weight'")
    blocks: dict[int, set[int]] = {}
    heads: dict[int, int] = {}
    for name, value in tensors.items():
        match = re.fullmatch(rf"layers\.(\d+)\.blocks\.(\d+)\.attn\.{_TABLE}", name)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            blocks.setdefault(stage, set()).add(index)
            heads[stage] = int(value.shape[1])
    if sorted(blocks) != list(range(len(blocks))) or not blocks:
        raise WeightsError(f"Swin stages {sorted(blocks)} are not 0..n-1")
    return {
        "swin_embed_dim": int(tensors["patch_embed.proj.weight"].shape[0]),
        "swin_depths": tuple(len(blocks[s]) for s in range(len(blocks))),
        "swin_num_heads": tuple(heads[s] for s in range(len(blocks))),
    }


def _table_windows(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> list[int]:
    """The window of each stage, read from the model's table shapes ((2w - 1)^2 rows)."""
    pattern = re.compile(rf"{re.escape(prefix)}layers_(\d+)/blocks_\d+/attn/{_TABLE}")
    windows: dict[int, int] = {}
    for name, shape in shapes.items():
        match = pattern.fullmatch(name)
        if match:
            windows[int(match.group(1))] = (math.isqrt(shape[0]) + 1) // 2
    return [windows[stage] for stage in sorted(windows)]


def fill_image_encoder(
    flat_params: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    prefix: str = "params/vision_encoder/",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fills a model's Swin from a Microsoft-layout file, resampling relative-position tables.

    Every parameter under `prefix` must come from the file (an ImageNet Swin fills a whole
    Swin); tables of another window are resampled to the model's (aptm §3.1).

    Args:
      flat_params: the model's flat variables ('params/vision_encoder/layers_0/...' -> array,
        as `flat.flatten_variables` gives them).
      path: the weights file (e.g. swin_base_patch4_window7_224_22k.pth).
      prefix: where the `SwinTransformer` sits ('params/...', ending in '/').

    Returns:
      (a new flat dict with the Swin replaced (float32 NumPy), the filled names sorted).

    Raises:
      WeightsError: unused tensors, unfilled parameters or shape mismatches (by name).
    """
    if not prefix.startswith("params/") or not prefix.endswith("/"):
        raise ValueError(f"prefix must look like 'params/.../', got '{prefix}'")
    tensors = model_tensors(read_checkpoint(path))
    shapes = {n: tuple(np.shape(v)) for n, v in flat_params.items() if n.startswith(prefix)}
    windows = _table_windows(shapes, prefix)
    converted = apply_rules(
        tensors, rules("", prefix.removeprefix("params/"), windows), shapes, str(path)
    )
    return {**flat_params, **converted}, sorted(converted)
