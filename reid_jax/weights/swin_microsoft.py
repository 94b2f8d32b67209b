"""Swin state dicts in the Microsoft / timm 0.4.9 layout -> `models/backbones/swin.py` params.

Used for APTM's 'vision_encoder.*' and the ImageNet Swin checkpoints (whose 'model' entry holds
the state dict). The name map is the one `backbones/swin.py` documents. Relative-position index
buffers and shift masks are recomputed by the model and dropped here, as is the classifier.
Relative-position tables must already have the target window's shape ((2w - 1)^2 rows per
stage); resampling the 22K checkpoint's 13 x 13 tables (aptm §3.1) is a separate step.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reid_jax.weights.mapping import Rule, apply_rules, conv_kernel, linear_kernel


def rules(source: str = "", target: str = "") -> list[Rule]:
    """The Swin name map.

    Args:
      source: regex before 'patch_embed.' / 'layers.' (e.g. '' or 'vision_encoder\\.').
      target: Flax prefix of the `SwinTransformer` ('' or 'vision_encoder/').
    """
    block = rf"{source}layers\.(\d+)\.blocks\.(\d+)"
    flax_block = f"params/{target}layers_\\1/blocks_\\2"
    merge = rf"{source}layers\.(\d+)\.downsample"
    flax_merge = f"params/{target}layers_\\1/downsample"
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
        Rule(
            rf"{block}\.attn\.relative_position_bias_table",
            f"{flax_block}/attn/relative_position_bias_table",
        ),
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
