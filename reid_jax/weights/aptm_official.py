"""Official APTM checkpoints -> `models/aptm/model.py` (aptm §5.4, §8.7).

A checkpoint is {'model': state dict, 'config': the run's YAML values} (or a bare state dict).
PyTorch name                                          Flax path
  vision_encoder.*  (Microsoft / timm 0.4.9 Swin)       vision_encoder/...  (swin_microsoft)
  text_encoder.bert.*  ('crossattention' in fusion      text_encoder/bert/... (hf_bert)
    layers)
  text_encoder.cls.predictions.{transform.*, bias}      text_encoder/cls/predictions/...
  text_encoder.cls.predictions.decoder.weight           (tied to the word embeddings: checked
                                                          equal and dropped)
  text_encoder.cls.predictions.decoder.bias             cls/predictions/bias (when the file
                                                          lacks 'cls.predictions.bias')
  vision_proj.*, text_proj.*                            vision_proj/*, text_proj/*
  itm_head.{0,1,3}.*  (Linear, LayerNorm, Linear)       itm_head/layers_{0,1,3}/*
  temp []                                               temp
X-VLM-style text names ('text_encoder.embeddings.*', 'text_encoder.encoder.*', without
'bert.') are renamed to the 'text_encoder.bert.*' layout first, as the reference loader does.
Index buffers, shift masks and position ids are recomputed or unused and dropped. Every
parameter of the model must come from the file; relative-position tables must already have
the model's window (the released checkpoints do).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from reid_jax.weights import hf_bert, swin_microsoft
from reid_jax.weights.mapping import Rule, linear_kernel
from reid_jax.weights.readers import Checkpoint, WeightsError

_TEXT = "text_encoder."
_BERT = "text_encoder.bert."


def head_rules() -> list[Rule]:
    """The projections, the ITM head (Sequential indices 0: Linear, 1: LayerNorm, 2: GELU,
    3: Linear) and the temperature."""
    return [
        Rule(r"(vision_proj|text_proj)\.weight", "params/\\1/kernel", linear_kernel),
        Rule(r"(vision_proj|text_proj)\.bias", "params/\\1/bias"),
        Rule(r"itm_head\.([03])\.weight", "params/itm_head/layers_\\1/kernel", linear_kernel),
        Rule(r"itm_head\.([013])\.bias", "params/itm_head/layers_\\1/bias"),
        Rule(r"itm_head\.1\.weight", "params/itm_head/layers_1/scale"),
        Rule(r"temp", "params/temp"),
    ]


def rules() -> list[Rule]:
    """The official name map (after `model_tensors`' renaming)."""
    return (
        swin_microsoft.rules(r"vision_encoder\.", "vision_encoder/")
        + hf_bert.masked_lm_rules(r"text_encoder\.", "text_encoder/")
        + head_rules()
    )


def _bert_layout(name: str) -> str:
    """X-VLM 'text_encoder.{embeddings,encoder,pooler}.*' -> 'text_encoder.bert.*'."""
    return re.sub(r"^text_encoder\.(?=(?:embeddings|encoder|pooler)\.)", _BERT, name)


def model_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The model state dict of a file: its 'model' entry (or the whole file), X-VLM text names
    renamed, the tied MLM decoder checked and dropped.

    Raises:
      WeightsError: a name present in both layouts, or an untied decoder.
    """
    state = checkpoint.sub("model.") or dict(checkpoint.tensors)
    tensors: dict[str, np.ndarray] = {}
    for name, value in state.items():
        renamed = _bert_layout(name)
        if renamed in tensors:
            raise WeightsError(f"{checkpoint.path}: {renamed} appears in both text layouts")
        tensors[renamed] = value
    return hf_bert.drop_tied_decoder(tensors, str(checkpoint.path), prefix=_TEXT)


def _stage_blocks(tensors: Mapping[str, np.ndarray], pattern: str) -> dict[int, dict[int, str]]:
    """{outer index: {inner index: name}} of the names matching `pattern` (two groups)."""
    found: dict[int, dict[int, str]] = {}
    for name in tensors:
        match = re.fullmatch(pattern, name)
        if match:
            found.setdefault(int(match.group(1)), {})[int(match.group(2))] = name
    return found


def _layers_with(tensors: Mapping[str, np.ndarray], block: str) -> set[int]:
    """Indices of the BERT layers that have `block` ('attention', 'crossattention')."""
    pattern = re.compile(rf"{re.escape(_BERT)}encoder\.layer\.(\d+)\.{block}\.")
    return {int(m.group(1)) for name in tensors if (m := pattern.match(name))}


def sizes(tensors: Mapping[str, np.ndarray]) -> dict[str, int | tuple[int, ...]]:
    """The `config.model` fields an APTM state dict fixes.

    From the shapes: vocab_size, text_hidden_size, max_position_embeddings, text_num_layers,
    text_intermediate_size, fusion_layer (the first layer with cross-attention), embed_dim,
    swin_embed_dim, swin_depths, swin_num_heads and swin_window_size (from stage 1's table,
    whose window is the configured one unless stage 1 clips it, which gives the same model).
    Not fixed by any shape: text_num_heads, the image size (a `config.data` field), dropout
    rates, temp_init, dtype, remat.

    Args:
      tensors: `model_tensors` output.

    Raises:
      WeightsError: a tensor these sizes are read from is missing.
    """
    try:
        words = tensors[f"{_BERT}embeddings.word_embeddings.weight"]
        positions = tensors[f"{_BERT}embeddings.position_embeddings.weight"]
        intermediate = tensors[f"{_BERT}encoder.layer.0.intermediate.dense.weight"]
        patch = tensors["vision_encoder.patch_embed.proj.weight"]
        embed_dim = tensors["vision_proj.weight"].shape[0]
    except KeyError as error:
        raise WeightsError(f"not an APTM state dict: no {error.args[0]}") from None
    layers = _layers_with(tensors, "attention")
    cross = _layers_with(tensors, "crossattention")
    tables = _stage_blocks(
        tensors, r"vision_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table"
    )
    if not layers:
        raise WeightsError("not an APTM state dict: no BERT self-attention layers")
    if not tables or sorted(tables) != list(range(len(tables))):
        raise WeightsError(f"APTM Swin stages {sorted(tables)} are not 0..n-1")
    stages = range(len(tables))
    first_table = tensors[tables[0][0]]
    return {
        "vocab_size": int(words.shape[0]),
        "text_hidden_size": int(words.shape[1]),
        "max_position_embeddings": int(positions.shape[0]),
        "text_num_layers": max(layers) + 1,
        "text_intermediate_size": int(intermediate.shape[0]),
        "fusion_layer": min(cross) if cross else max(layers) + 1,
        "embed_dim": int(embed_dim),
        "swin_embed_dim": int(patch.shape[0]),
        "swin_depths": tuple(len(tables[s]) for s in stages),
        "swin_num_heads": tuple(int(tensors[tables[s][0]].shape[1]) for s in stages),
        "swin_window_size": (math.isqrt(first_table.shape[0]) + 1) // 2,
    }
