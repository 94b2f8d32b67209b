"""Swin (backbones/swin.py) against timm 0.4.9's SwinTransformer (aptm §8.8) at the real
384 x 128 / window-8 geometry with thin widths, through reid_jax/weights/swin_microsoft.py.

torch and timm==0.4.9 are test requirements: a missing one is an error here, not a skip.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from reid_jax.models.backbones import swin
from reid_jax.models.backbones.swin import SwinBlock, SwinTransformer
from reid_jax.weights import swin_microsoft
from reid_jax.weights.flat import unflatten_variables
from tests import torch_compat

KEY = jax.random.key(0)
# Swin-B's geometry (384 x 128, patch 4, window 8, 4 stages) with thin stages.
THIN = dict(embed_dim=8, depths=(2, 2, 3, 2), num_heads=(1, 2, 2, 4))


def param_shapes(model, images):
    abstract = jax.eval_shape(functools.partial(model.init, train=False), KEY, images)
    flat = traverse_util.flatten_dict(abstract["params"])
    return {"/".join(k): v.shape for k, v in flat.items()}


@pytest.fixture(scope="module")
def timm_parity():
    """timm 0.4.9 reference (random, every parameter perturbed), its token outputs, and ours."""
    torch_compat.import_torchvision()
    import torch
    from timm.models.swin_transformer import SwinTransformer as TimmSwin

    torch.manual_seed(0)
    reference = TimmSwin(
        img_size=(384, 128), patch_size=4, window_size=8, num_classes=0, **THIN
    ).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("relative_position_bias_table"):
                param.copy_(noise)  # large enough that a wrong index shows
            elif param.ndim == 1:
                param.copy_(
                    (1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.1 * noise
                )
            else:
                param.copy_(noise / np.sqrt(np.prod(param.shape[1:])))
    images = np.random.default_rng(2).normal(size=(2, 384, 128, 3)).astype(np.float32)
    with torch.no_grad():
        x = reference.patch_embed(torch.tensor(images).permute(0, 3, 1, 2))
        for layer in reference.layers:
            x = layer(x)
        tokens = reference.norm(x).numpy()
        pooled = reference.forward_features(torch.tensor(images).permute(0, 3, 1, 2)).numpy()
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    model = SwinTransformer(**THIN)
    shapes = {"params/" + k: v for k, v in param_shapes(model, images).items()}
    flat = swin_microsoft.convert(tensors, shapes, "timm")
    variables = unflatten_variables({k: jnp.asarray(v) for k, v in flat.items()})
    ours = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    return reference, tokens, pooled, np.asarray(ours["image_tokens"])


def test_tokens_match_timm(timm_parity):
    _, tokens, pooled, ours = timm_parity
    assert ours.shape == (2, 1 + 12 * 4, 64)
    np.testing.assert_allclose(ours[:, 1:], tokens, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours[:, 0], pooled, atol=1e-4, rtol=0)  # the mean token


def test_window_geometry_follows_timm(timm_parity):
    reference = timm_parity[0]
    resolution = (96, 32)
    for layer in reference.layers:
        for index, block in enumerate(layer.blocks):
            assert swin.block_geometry(resolution, 8, index) == (
                block.window_size,
                block.shift_size,
            )
        resolution = (resolution[0] // 2, resolution[1] // 2)
    # aptm §3.1 table: shift 4 only in the 2nd block of stages 1-2, window 4 in stage 4
    assert [swin.block_geometry(r, 8, 1) for r in [(96, 32), (48, 16), (24, 8), (12, 4)]] == [
        (8, 4),
        (8, 4),
        (8, 0),
        (4, 0),
    ]


def test_shifted_window_mask_separates_source_regions():
    mask = swin.shifted_window_mask((16, 8), 4, 2)
    assert mask.shape == (8, 16, 16)
    assert not mask[0].any()  # interior window: one region
    assert set(np.unique(mask)) == {0.0, -100.0}
    np.testing.assert_array_equal(mask, np.transpose(mask, (0, 2, 1)))
    assert not swin.shifted_window_mask((16, 8), 4, 0).any()


def test_swin_b_parameter_count_and_tables():
    shapes = param_shapes(SwinTransformer(), jax.ShapeDtypeStruct((1, 384, 128, 3), jnp.float32))
    assert sum(int(np.prod(s)) for s in shapes.values()) == 86_753_016  # timm 0.4.9, aptm §8.8
    table = "attn/relative_position_bias_table"
    assert shapes[f"layers_0/blocks_1/{table}"] == (225, 4)
    assert shapes[f"layers_2/blocks_17/{table}"] == (225, 16)
    assert shapes[f"layers_3/blocks_1/{table}"] == (49, 32)
    assert shapes["layers_2/downsample/reduction/kernel"] == (2048, 1024)
    assert "layers_3/downsample/norm/scale" not in shapes


def test_remat_keeps_parameter_paths():
    images = jax.ShapeDtypeStruct((1, 384, 128, 3), jnp.float32)
    assert param_shapes(SwinTransformer(**THIN), images) == param_shapes(
        SwinTransformer(**THIN, remat=True), images
    )


def test_stochastic_depth_drops_whole_samples():
    block = SwinBlock(dim=8, num_heads=2, resolution=(8, 8), window=4, drop_path_rate=0.5)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 64, 8)), jnp.float32)
    variables = block.init(KEY, x, train=False)
    out = block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    unchanged = np.all(np.asarray(out) == np.asarray(x), axis=(1, 2))
    assert 0 < unchanged.sum() < 32  # both branches dropped for some samples only
    assert not np.allclose(block.apply(variables, x, train=False), x)
