"""The parameter tree is a clean image of the APTM state dict (aptm §8.7): every Flax path, written
back in PyTorch naming, is converted onto itself by the official name map (the Swin and BERT name
maps plus the head rules of weights/aptm_official.py), and the converters refuse files that do
not fit."""

import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from reid_jax.models.aptm.model import TINY_FIELDS, AptmModel
from reid_jax.weights import aptm_official, swin_microsoft
from reid_jax.weights.mapping import apply_rules
from reid_jax.weights.readers import WeightsError

APTM_RULES = aptm_official.rules()  # Swin + BERT name maps plus the head rules


def torch_name(path: tuple[str, ...]) -> str:
    """Flax path -> the APTM / PyTorch name: 'name_N' -> 'name.N', kernel/scale/embedding ->
    weight; the ITM head's Sequential indices are 'itm_head/layers_N' (flax nn.Sequential style).
    """
    if path[0] == "itm_head":
        path = (f"itm_head_{path[1].removeprefix('layers_')}", *path[2:])
    parts = []
    for part in path:
        stem, _, index = part.rpartition("_")
        parts += [stem, index] if stem and index.isdigit() else [part]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(parts[-1])
    return ".".join(parts[:-1] + [leaf or parts[-1]])


def torch_layout(array: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
    if path[-1] == "kernel" and array.ndim == 4:
        return np.transpose(array, (3, 2, 0, 1))
    return array.T if path[-1] == "kernel" else array


@pytest.fixture(scope="module")
def tiny_params():
    model = AptmModel(**TINY_FIELDS)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False),
        jax.random.key(0),
        np.zeros((1, *TINY_FIELDS["image_size"], 3), np.float32),
        np.zeros((1, 6), np.int32),
        np.ones((1, 6), np.int32),
        np.zeros((1, 2), np.int32),
    )["params"]
    flat = traverse_util.flatten_dict(shapes)
    return {path: rng.normal(size=leaf.shape).astype(np.float32) for path, leaf in flat.items()}


def test_aptm_state_dict_names_round_trip(tiny_params):
    tensors = {torch_name(p): torch_layout(v, p) for p, v in tiny_params.items()}
    assert "vision_encoder.layers.0.blocks.1.attn.relative_position_bias_table" in tensors
    assert "text_encoder.bert.encoder.layer.3.crossattention.self.key.weight" in tensors
    assert "text_encoder.cls.predictions.transform.LayerNorm.weight" in tensors
    assert "itm_head.3.weight" in tensors and "temp" in tensors
    # buffers and tied copies an APTM checkpoint also holds are dropped
    extras = {
        "vision_encoder.layers.0.blocks.0.attn.relative_position_index": np.zeros((64, 64)),
        "vision_encoder.layers.0.blocks.1.attn_mask": np.zeros((8, 16, 16)),
        "text_encoder.cls.predictions.decoder.weight": np.zeros((64, 16)),
        "text_encoder.bert.embeddings.position_ids": np.zeros((1, 32)),
    }
    expected = {"params/" + "/".join(p): v.shape for p, v in tiny_params.items()}
    converted = apply_rules({**tensors, **extras}, APTM_RULES, expected, "aptm")
    for path, value in tiny_params.items():
        np.testing.assert_array_equal(converted["params/" + "/".join(path)], value)


def test_converters_name_what_does_not_fit(tiny_params):
    swin = {p[1:]: v for p, v in tiny_params.items() if p[0] == "vision_encoder"}
    tensors = {torch_name(p): torch_layout(v, p) for p, v in swin.items()}
    expected = {"params/" + "/".join(p): v.shape for p, v in swin.items()}
    tensors["layers.0.blocks.0.attn.qkv.weight"] = np.zeros((5, 5), np.float32)
    tensors["layers.9.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match="unused tensor layers.9.extra.weight") as error:
        swin_microsoft.convert(tensors, expected, "swin.pth")
    assert "shape mismatch: params/layers_0/blocks_0/attn/qkv/kernel" in str(error.value)
    del tensors["layers.9.extra.weight"], tensors["layers.0.blocks.0.attn.qkv.weight"]
    with pytest.raises(WeightsError, match="not filled: params/layers_0/blocks_0/attn/qkv/kernel"):
        swin_microsoft.convert(tensors, expected, "swin.pth")
