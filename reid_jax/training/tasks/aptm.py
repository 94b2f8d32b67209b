"""APTM task: MALS pre-training and text->image fine-tuning on the generic loop (aptm §4-§6).

Per step every image is encoded once by Swin and reused by every term (aptm §4;
computed in `aptm_loss.py`):

  itc            identity-aware contrastive loss over the *global* batch (losses/contrastive)
  itm            cross-encoder matching with identity-masked hard negatives sampled within
                 reference-sized groups of `loss.group_size` (§8.2: independent of the device
                 count)
  mlm            masked caption tokens predicted through the full BERT with cross-attention
  itc_eda/itm_eda  the same on the EDA view of each caption (fine-tuning, weight 0.8, §4.4)
  iac/iam/mam    attribute prompts (MALS pre-training, weighted beta / 3 each, §4.5)

`config.loss.weights` names the terms and their weights (§4.6); only the named terms are
computed. ITC's gradient scale is `loss.itc_gradient_scale`: 'global' (the true gradient of
the global-batch loss) or 'per_device_emulation' (the reference's 1/W encoder gradient, §8.1).

The attribute prompt set is encoded once per step (the reference encodes it on every GPU with
its own dropout; one encoding shared by the groups is the deviation). Evaluation (two-stage
retrieval, §6) lives in `aptm_eval.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax import config_lib
from reid_jax.data import aptm_attribute_images, aptm_examples, pipeline
from reid_jax.losses.contrastive import combine_objectives
from reid_jax.models.aptm.model import AptmModel
from reid_jax.text.wordpiece import WordPieceTokenizer, load_vocab_file
from reid_jax.training import xla_options
from reid_jax.training.tasks import aptm_eval, aptm_loss
from reid_jax.training.tasks.aptm_export import (  # noqa: F401 (the task's bundle hooks)
    export_encoders,
    export_preprocessing,
)
from reid_jax.training.tasks.aptm_loss import ATTRIBUTE_TERMS, TERMS
from reid_jax.training.tasks.base import TrainDataInfo

VOCAB_FILE = "vocab.txt"


# ----------------------------------------------------------------------------- vocabulary


def _source_run_vocab(init_from: str) -> Path | None:
    """vocab.txt of the run an `init_from` path belongs to (run, step folder or RUN/best)."""
    if not init_from:
        return None
    path = Path(init_from)
    for folder in (path, path.parent, path.parent.parent):
        if (folder / VOCAB_FILE).is_file():
            return folder / VOCAB_FILE
    return None


def load_tokenizer(config: Any, workdir: str | os.PathLike) -> WordPieceTokenizer:
    """The run's WordPiece tokenizer; its vocabulary is kept as workdir/vocab.txt.

    First use, in order: the `init_from` run's vocab.txt (fine-tuning keeps the embedding
    rows it starts from), `data.vocab_file`, or one built from the dataset's words (embedded
    data: both of its parts, so pre-training and fine-tuning share it). Every process derives
    the same vocabulary itself; process 0 writes the file.

    Raises:
      ConfigError: a real dataset without `data.vocab_file` and no init_from vocabulary, or a
        `data.vocab_file` that differs from the init_from run's.
    """
    path = Path(workdir) / VOCAB_FILE
    if path.exists():
        return WordPieceTokenizer.from_vocab_file(path)
    source = _source_run_vocab(config.init_from)
    wanted = config.data.vocab_file
    if source and wanted and Path(wanted).read_bytes() != source.read_bytes():
        raise config_lib.ConfigError(
            "data.vocab_file",
            f"{wanted} differs from the vocabulary of init_from ({source}); the embedding "
            "rows would not match",
        )
    if source or wanted:
        content = Path(source or wanted).read_bytes()
        vocab = load_vocab_file(source or wanted)
    elif config.data.dataset == "embedded":
        tokens = _embedded_vocab(config.data)
        content = "".join(f"{t}\n" for t in tokens).encode("utf-8")
        vocab = {token: i for i, token in enumerate(tokens)}
    else:
        raise config_lib.ConfigError(
            "data.vocab_file", "required for real data (bert-base-uncased's vocab.txt, aptm §1.5)"
        )
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    return WordPieceTokenizer(vocab, source=str(path))


def _embedded_vocab(data_config: Any) -> list[str]:
    texts = []
    for part in aptm_examples.EMBEDDED_PARTS:
        part_config = data_config.copy_and_resolve_references()
        with part_config.unlocked():
            part_config.embedded_part = part
        texts += aptm_examples.caption_tokenizer_texts(part_config)
    return aptm_examples.build_word_vocab(texts)


# ----------------------------------------------------------------------------- data


def make_train_data(
    config: Any, workdir: str | os.PathLike, *, shard_index: int, shard_count: int
) -> tuple[Any, TrainDataInfo]:
    """APTM training stream of this process and its data facts (aptm §1)."""
    data, loss = config.data, config.loss
    if data.dataset not in aptm_examples.DATASETS:
        raise config_lib.ConfigError(
            "data.dataset", f"must be one of {aptm_examples.DATASETS}, got '{data.dataset}'"
        )
    _check_terms(config)
    attribute_images = aptm_attribute_images.trains_on_attributes(data)
    caption_terms = sorted(set(loss.weights) - set(ATTRIBUTE_TERMS))
    if attribute_images and caption_terms:
        raise config_lib.ConfigError(
            "loss.weights",
            f"{caption_terms} need captions; {data.dataset} trains on attribute images "
            "(use iac, iam, mam)",
        )
    if config.train.batch_size % loss.group_size:
        raise config_lib.ConfigError(
            "loss.group_size",
            f"{loss.group_size} must divide train.batch_size {config.train.batch_size}",
        )
    tokenizer = load_tokenizer(config, workdir)
    examples = aptm_examples.prepare_train(
        aptm_examples.load_train_pairs(data), tokenizer, max_tokens=data.max_tokens
    )
    uses_attributes = any(t in loss.weights for t in ATTRIBUTE_TERMS)
    if uses_attributes and examples.attributes is None:
        raise config_lib.ConfigError(
            "loss.weights", "iac/iam/mam need attribute labels (MALS); this dataset has none"
        )
    prompt_ids = (
        aptm_examples.encode_prompts(tokenizer, data.prompt_set) if uses_attributes else None
    )
    if prompt_ids is not None and examples.attributes.shape[1] * 2 != len(prompt_ids):
        raise config_lib.ConfigError(
            "data.prompt_set",
            f"'{data.prompt_set}' has {len(prompt_ids)} prompts for "
            f"{examples.attributes.shape[1]} attributes (2 per attribute)",
        )
    element_map = aptm_examples.AptmTrainMap(
        examples,
        tokenizer,
        image_size=tuple(data.image_size),
        normalisation=aptm_examples.NORMALISATION[data.train_normalisation],
        erasing_p=data.erasing_p,
        max_tokens=data.max_tokens,
        max_words=data.max_words,
        eda="itc_eda" in loss.weights or "itm_eda" in loss.weights,
        clean_eda=data.clean_eda,
        eda_synonyms=data.eda_synonyms,
        prompt_ids=prompt_ids,
        seed=config.seed,
        captions=not attribute_images,
        bad_images=data.bad_images,
    )
    loader = pipeline.make_shuffled_loader(
        len(examples),
        element_map,
        global_batch_size=config.train.batch_size,
        seed=config.seed,
        num_workers=data.num_workers,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    steps = pipeline.steps_per_epoch(len(examples), config.train.batch_size)
    if steps < 1:
        raise config_lib.ConfigError(
            "train.batch_size",
            f"{config.train.batch_size} exceeds the {len(examples)} training pairs",
        )
    extras = {
        "vocab_size": tokenizer.vocab_size,
        "pad_id": tokenizer.pad_id,
        "num_identities": examples.num_identities,
        "prompt_ids": prompt_ids.tolist() if prompt_ids is not None else None,
    }
    info = TrainDataInfo(
        num_examples=len(examples), steps_per_epoch=steps, num_classes=0, extras=extras
    )
    return loader, info


def _check_terms(config: Any) -> None:
    unknown = sorted(set(config.loss.weights) - set(TERMS))
    if unknown or not config.loss.weights:
        raise config_lib.ConfigError(
            "loss.weights", f"terms must be a non-empty subset of {TERMS}, got {unknown or '{}'}"
        )
    scales = ("global", "per_device_emulation")
    if config.loss.itc_gradient_scale not in scales:
        raise config_lib.ConfigError(
            "loss.itc_gradient_scale",
            f"must be one of {scales}, got '{config.loss.itc_gradient_scale}'",
        )


# ----------------------------------------------------------------------------- model

MODEL_FIELDS = (
    "swin_embed_dim",
    "swin_depths",
    "swin_num_heads",
    "swin_window_size",
    "drop_path_rate",
    "text_hidden_size",
    "text_num_layers",
    "text_num_heads",
    "text_intermediate_size",
    "max_position_embeddings",
    "fusion_layer",
    "text_dropout_rate",
    "embed_dim",
    "temp_init",
    "remat",
)


def create_model(config: Any, info: TrainDataInfo) -> AptmModel:
    """Unpacks `config.model` into an AptmModel; vocab_size 0 = the run's vocabulary."""
    m = config.model
    vocab_size = int(m.vocab_size) or int(info.extras.get("vocab_size", 0))
    if vocab_size <= 0:
        raise config_lib.ConfigError("model.vocab_size", "unknown: set it or train first")
    if m.max_position_embeddings < config.data.max_tokens:
        raise config_lib.ConfigError(
            "model.max_position_embeddings",
            f"{m.max_position_embeddings} < data.max_tokens {config.data.max_tokens}",
        )
    fields = {name: m[name] for name in MODEL_FIELDS}
    fields["image_size"] = tuple(config.data.image_size)  # one source: the data's size
    fields["swin_depths"] = tuple(m.swin_depths)
    fields["swin_num_heads"] = tuple(m.swin_num_heads)
    return AptmModel(vocab_size=vocab_size, dtype=jnp.dtype(m.dtype), **fields)


def init_variables(model: nn.Module, rng: jax.Array, config: Any) -> dict[str, Any]:
    """Initialises every parameter from a dummy batch of 2."""
    height, width = config.data.image_size
    images = jnp.zeros((2, height, width, 3), jnp.float32)
    ids = jnp.ones((2, config.data.max_tokens), jnp.int32)
    positions = jnp.zeros((2, 10), jnp.int32)
    return dict(
        model.init({"params": rng, "dropout": rng}, images, ids, ids, positions, train=False)
    )


def has_pretrained(config: Any) -> bool:
    """Whether `load_pretrained` has something to load (`model.pretrained_text`)."""
    return bool(config.model.pretrained_text)


def load_pretrained(variables: dict[str, Any], config: Any) -> tuple[dict[str, Any], list[str]]:
    """Loads a Hugging Face BERT checkpoint (`model.pretrained_text`) into the text tower.

    `BertModel` files ('embeddings.*', 'encoder.layer.N.*'; e.g. MiniLM, whose package ships
    `model.safetensors`) and `BertForMaskedLM` / `BertForPreTraining` files ('bert.*',
    'cls.*'; bert-base-uncased) fill the embeddings and, layer by layer, the self-attention
    and feed-forward blocks of layers 0 .. N-1 (text and fusion layers alike, as APTM starts
    from bert-base-uncased, aptm §3.2); the cross-attention blocks (and the MLM head, for a
    file without one) keep their fresh initialisation. Layers of the file beyond
    `model.text_num_layers` are left out; every other tensor must find its parameter with
    the same shape (sizes: `model.text_*`, `model.vocab_size`).

    Returns:
      (variables as NumPy arrays, lines for the run's output).

    Raises:
      WeightsError: a tensor without a parameter, or a shape mismatch (names listed).
    """
    from reid_jax.weights import hf_bert
    from reid_jax.weights.flat import flatten_variables, unflatten_variables

    layers = int(config.model.text_num_layers)
    flat = flatten_variables(variables)
    flat, filled, skipped = hf_bert.fill_first_layers(
        flat, config.model.pretrained_text, "params/text_encoder/", layers
    )
    text = [n for n in flat if n.startswith("params/text_encoder/")]
    values = sum(int(np.prod(flat[n].shape)) for n in filled)
    note = f"; its layers {skipped} are not used (model.text_num_layers={layers})"
    return unflatten_variables(flat), [
        f"pretrained_text {config.model.pretrained_text}: loaded {len(filled)} arrays "
        f"({values:,} values) into text_encoder/; {len(text) - len(filled)} text-tower arrays "
        "keep their fresh initialisation" + (note if skipped else "")
    ]


# REMAT on XLA:CPU needs the barrier pass skipped to save memory (see tasks/ssan.py).
def compiler_options(config: Any, backend: str | None = None) -> dict[str, str] | None:
    """XLA options for `model.remat` on CPU (as SSAN), else None."""
    backend = backend or jax.default_backend()
    if not config.model.remat or backend != "cpu":
        return None
    return dict(xla_options.CPU_REMAT_OPTIONS)


def loss_fn(
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    step: jax.Array,
    config: Any,
    info: TrainDataInfo,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """Weighted APTM objective of one batch (aptm §4.6).

    Args:
      model: the AptmModel.
      params: its parameters.
      batch_stats: {} (APTM has no BatchNorm).
      batch: from `AptmTrainMap` (image [B, H, W, 3], label [B], input_ids / attention_mask
        [B, T], mlm_* and, per configuration, eda_* and attributes / mam_*).
      key: the step key (split by purpose).
      step: optimizer step (unused).
      config: the config (`config.loss`).
      info: data facts (the prompt set).

    Returns:
      (loss, ({'loss', 'loss_<term>' (weighted), 'temperature'}, batch_stats)).
    """
    del step
    terms = aptm_loss.loss_terms(model, params, batch, key, config=config, info=info)
    total, weighted = combine_objectives(terms, dict(config.loss.weights))
    metrics = {f"loss_{name}": value for name, value in weighted.items()}
    metrics["loss"] = total
    metrics["temperature"] = params["temp"].astype(jnp.float32)
    return total, (metrics, batch_stats)


# ----------------------------------------------------------------------------- evaluation


def selectable_metrics(config: Any) -> set[str]:
    """Metric paths `evaluate` reports (e.g. 'fused_w4/R1', 'itc/R1'; attribute images:
    'recognition/mA' and, on Market-format data, 'attribute_queries/mAP')."""
    if aptm_attribute_images.trains_on_attributes(config.data):
        out = {f"recognition/{n}" for n in ("mA", "accuracy", "precision", "recall", "F1")}
        if config.data.dataset == "embedded":
            names = ("R1", "R5", "R10", "mAP", "mAP_trapezoid")
            out |= {f"attribute_queries/{n}" for n in names}
        return out
    names = ("R1", "R5", "R10", "mAP", "mINP")
    return {f"{v}/{n}" for v in aptm_eval.score_variants(config.eval) for n in names}


def evaluate(
    model: nn.Module,
    variables: dict[str, Any],
    config: Any,
    workdir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh,
    info: TrainDataInfo,
) -> dict[str, Any]:
    """Two-stage text->image retrieval on the test split (aptm §6); for attribute images,
    recognition over the prompt set and attribute queries (aptm §6.4, attribute_reid §4)."""
    del info
    tokenizer = load_tokenizer(config, workdir)
    if aptm_attribute_images.trains_on_attributes(config.data):
        images = aptm_attribute_images.load_attribute_images(config.data, "test")
        return aptm_eval.evaluate_attribute_images(
            model,
            variables,
            images,
            aptm_examples.encode_prompts(tokenizer, config.data.prompt_set),
            tokenizer.pad_id,
            config,
            mesh=mesh,
            out_dir=Path(workdir) / "eval",
        )
    records = aptm_examples.load_test_images(config.data)
    if config.eval.max_gallery_images > 0:
        records = records[: config.eval.max_gallery_images]
    test = aptm_examples.prepare_test(
        records,
        tokenizer,
        max_tokens=config.data.max_tokens,
        max_words=config.data.max_words,
        clean=config.data.clean_test,
    )
    return aptm_eval.evaluate_test_split(
        model, variables, test, config, mesh=mesh, out_dir=Path(workdir) / "eval"
    )
