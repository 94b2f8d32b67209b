"""Hugging Face BERT state dicts -> `models/backbones/bert.py` / `models/aptm/heads.py` params.

Covers `BertModel` ('embeddings.*', 'encoder.*', 'pooler.*'; e.g. MiniLM), `BertForMaskedLM` and
`BertForPreTraining` ('bert.*', 'cls.*'; e.g. bert-base-uncased's pytorch_model.bin, whose
LayerNorms are still named gamma/beta) and APTM / X-VLM's text encoder ('text_encoder.bert.*'
with 'crossattention' in the fusion layers, 'text_encoder.cls.*'). The name map is the one
`backbones/bert.py` documents; the pooler, the NSP head and the tied decoder (a copy of the word
embeddings and of 'cls.predictions.bias') are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reid_jax.weights.mapping import Rule, apply_rules, linear_kernel

_WEIGHT = r"(?:weight|gamma)"
_BIAS = r"(?:bias|beta)"


def _dense(source: str, target: str) -> list[Rule]:
    return [
        Rule(rf"{source}\.weight", f"params/{target}/kernel", linear_kernel),
        Rule(rf"{source}\.bias", f"params/{target}/bias"),
    ]


def _layer_norm(source: str, target: str) -> list[Rule]:
    return [
        Rule(rf"{source}\.{_WEIGHT}", f"params/{target}/scale"),
        Rule(rf"{source}\.{_BIAS}", f"params/{target}/bias"),
    ]


def body_rules(source: str = "", target: str = "") -> list[Rule]:
    """Rules for a BERT body (embeddings + layers, self- and cross-attention).

    Args:
      source: regex before 'embeddings.' / 'encoder.' (e.g. '', 'bert\\.',
        'text_encoder\\.bert\\.').
      target: Flax prefix of the `BertModel` ('' or 'text_encoder/bert/').
    """
    embed = f"{target}embeddings"
    layer = rf"{source}encoder\.layer\.(\d+)"
    flax_layer = f"{target}encoder/layer_\\1"
    rules = [
        Rule(
            rf"{source}embeddings\.(word|position|token_type)_embeddings\.weight",
            f"params/{embed}/\\1_embeddings/embedding",
        ),
        Rule(rf"{source}embeddings\.position_ids", ""),  # a buffer in older checkpoints
        *_layer_norm(rf"{source}embeddings\.LayerNorm", f"{embed}/LayerNorm"),
        *_dense(
            rf"{layer}\.(attention|crossattention)\.self\.(query|key|value)",
            f"{flax_layer}/\\2/self/\\3",
        ),
        *_dense(
            rf"{layer}\.(attention|crossattention)\.output\.dense", f"{flax_layer}/\\2/output/dense"
        ),
        *_layer_norm(
            rf"{layer}\.(attention|crossattention)\.output\.LayerNorm",
            f"{flax_layer}/\\2/output/LayerNorm",
        ),
        *_dense(rf"{layer}\.(intermediate|output)\.dense", f"{flax_layer}/\\2/dense"),
        *_layer_norm(rf"{layer}\.output\.LayerNorm", f"{flax_layer}/output/LayerNorm"),
        Rule(rf"{source}pooler\.dense\.(weight|bias)", ""),  # APTM has no pooler
    ]
    return rules


def mlm_head_rules(source: str = r"cls\.", target: str = "cls/") -> list[Rule]:
    """Rules for `cls.predictions.*` into `heads.BertMlmHead` at `target`; drops the tied
    decoder and the NSP head ('cls.seq_relationship.*')."""
    transform = f"{target}predictions/transform"
    return [
        *_dense(rf"{source}predictions\.transform\.dense", f"{transform}/dense"),
        *_layer_norm(rf"{source}predictions\.transform\.LayerNorm", f"{transform}/LayerNorm"),
        Rule(rf"{source}predictions\.bias", f"params/{target}predictions/bias"),
        Rule(rf"{source}predictions\.decoder\.(weight|bias)", ""),  # tied copies
        Rule(rf"{source}seq_relationship\.(weight|bias)", ""),
    ]


def masked_lm_rules(source: str = "", target: str = "") -> list[Rule]:
    """Rules for a `BertForMaskedLM` / `BertForPreTraining` state dict ('bert.*', 'cls.*') into
    `heads.BertForMaskedLM` at `target` (APTM: source 'text_encoder\\.', target
    'text_encoder/')."""
    return body_rules(rf"{source}bert\.", f"{target}bert/") + mlm_head_rules(
        rf"{source}cls\.", f"{target}cls/"
    )


def convert(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    source: str,
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Converts a BERT state dict, choosing body-only or masked-LM rules from its names.

    Args:
      tensors: the state dict ('embeddings.*' or 'bert.*' names).
      expected: flat Flax shapes ('params/...') the file must fill (a `BertModel`'s, or a
        `BertForMaskedLM`'s with 'bert/' and 'cls/').
      source: file name for errors.
      optional: flat shapes the file may fill (e.g. cross-attention blocks that a plain BERT
        checkpoint lacks).

    Returns:
      Flax path -> float32 array.

    Raises:
      WeightsError: unused tensors, unfilled parameters or shape mismatches (by name).
    """
    with_head = any(name.startswith("bert.") for name in tensors)
    rules = masked_lm_rules() if with_head else body_rules()
    return apply_rules(tensors, rules, expected, source, optional)
