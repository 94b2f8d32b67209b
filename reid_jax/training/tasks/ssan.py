"""SSAN task: data, model, loss weighting and text->image evaluation for the generic loop.

Loss (ssan §3.1, §3.5), with weights w = (global 1, PFL 0.5, PRL 0.5) from `config.loss`:
  L_ID   = sum_level w_level * [ID(image_level) + ID(text_level)]   (per-part CE averaged)
  L_rank = sum_level w_level * CR(image_level, text_level, partner_level)
  L      = L_ID + L_rank
The CR loss's adaptive margin switches on at `config.loss.epoch_begin`; the epoch is
`state.step // steps_per_epoch`, traced, so the switch does not recompile.

Evaluation (ssan §5) lives in `ssan_eval.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax import config_lib
from reid_jax.data import dataset_root, pipeline
from reid_jax.data.records import CaptionedImage
from reid_jax.data.ssan_examples import (
    build_ssan_vocabulary_from_records,
    prepare_ssan_test,
    prepare_ssan_train,
)
from reid_jax.losses.classification import part_identity_loss, softmax_cross_entropy
from reid_jax.losses.ranking import compound_ranking_loss
from reid_jax.models.ssan.model import REMAT_POLICIES, SsanModel
from reid_jax.text.vocab import Vocabulary
from reid_jax.training import xla_options
from reid_jax.training.tasks import ssan_eval
from reid_jax.training.tasks.base import TrainDataInfo
from reid_jax.training.tasks.ssan_eval import LEVELS

VOCAB_FILE = "vocab.json"


def _parse_records(dataset: str, root: str) -> list[CaptionedImage]:
    from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
    from reid_jax.data.formats.icfg_pedes import load_icfg_pedes

    loader = load_icfg_pedes if dataset == "icfg_pedes" else load_cuhk_pedes
    return loader(root)


_load_records = dataset_root.cached_loader(_parse_records)
# data.dataset -> TFDS builder, for reading a prepared dataset (data.tfds_dir).
PREPARED_BUILDERS = {
    "embedded": "cuhk_pedes",
    "cuhk_pedes": "cuhk_pedes",
    "icfg_pedes": "icfg_pedes",
}


def load_split(data_config: Any, split: str) -> list[CaptionedImage]:
    """Records of one split ('train' or 'test') of the configured dataset (cached)."""
    return dataset_root.split_records(
        data_config,
        split,
        embedded_part="CUHK-PEDES",
        load=_load_records,
        builders=PREPARED_BUILDERS,
    )


def load_vocabulary(config: Any, workdir: str | os.PathLike) -> Vocabulary:
    """The run's word vocabulary: workdir/vocab.json, built from the train split on first use."""
    path = Path(workdir) / VOCAB_FILE
    if path.exists():
        return Vocabulary.load(path)
    vocab = build_ssan_vocabulary_from_records(
        load_split(config.data, "train"), min_count=config.data.min_word_count
    )
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        vocab.save(path)
    return vocab


def make_train_data(
    config: Any, workdir: str | os.PathLike, *, shard_index: int, shard_count: int
) -> tuple[Any, TrainDataInfo]:
    """SSAN training stream of this process and its data facts (ssan §1.3-1.6)."""
    vocab = load_vocabulary(config, workdir)
    examples = prepare_ssan_train(
        load_split(config.data, "train"),
        vocab,
        dataset=config.data.dataset,
        max_length=config.data.max_length,
        table_size=config.model.vocab_size,
    )
    loader = pipeline.make_ssan_train_loader(
        examples,
        global_batch_size=config.train.batch_size,
        image_size=tuple(config.data.image_size),
        seed=config.seed,
        num_workers=config.data.num_workers,
        shard_index=shard_index,
        shard_count=shard_count,
        bad_images=config.data.bad_images,
    )
    info = TrainDataInfo(
        num_examples=len(examples),
        steps_per_epoch=pipeline.steps_per_epoch(len(examples), config.train.batch_size),
        num_classes=examples.num_classes,
        extras={"vocabulary_words": len(vocab)},
    )
    if info.steps_per_epoch < 1:
        raise ValueError(
            f"train.batch_size {config.train.batch_size} exceeds the "
            f"{len(examples)} training captions"
        )
    return loader, info


def image_normalisation(config: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the step normalises the loader's uint8 images with (ssan §1.5)."""
    from reid_jax.data import transforms

    del config
    return transforms.SSAN_MEAN, transforms.SSAN_STD


def create_model(config: Any, info: TrainDataInfo) -> SsanModel:
    """Unpacks `config.model` into an SsanModel with C = info.num_classes."""
    m = config.model
    if m.remat not in REMAT_POLICIES:
        raise config_lib.ConfigError(
            "model.remat", f"must be one of {REMAT_POLICIES}, got {m.remat!r}"
        )
    return SsanModel(
        num_classes=info.num_classes,
        vocab_size=m.vocab_size,
        embed_dim=m.embed_dim,
        lstm_hidden=m.lstm_hidden,
        feature_dim=m.feature_dim,
        num_parts=m.num_parts,
        relation_dim=m.relation_dim,
        backbone_depth=m.backbone_depth,
        backbone_width=m.backbone_width,
        last_stride=m.last_stride,
        dropout_rate=m.dropout_rate,
        leaky_slope=m.leaky_slope,
        dtype=jnp.dtype(m.dtype),
        remat=m.remat,
    )


def compiler_options(config: Any, backend: str | None = None) -> dict[str, str] | None:
    """XLA options the jitted train step needs for `config.model.remat` to save memory.

    Args:
      config: the config (`config.model.remat`).
      backend: platform the step compiles for; `jax.default_backend()` when None.

    Returns:
      `xla_options.CPU_REMAT_OPTIONS` (a copy) for remat != 'none' on 'cpu', else None;
      `xla_options.train_step_options` adds the platform's own options.
    """
    backend = backend or jax.default_backend()
    if config.model.remat == "none" or backend != "cpu":
        return None
    return dict(xla_options.CPU_REMAT_OPTIONS)


def init_variables(model: nn.Module, rng: jax.Array, config: Any) -> dict[str, Any]:
    """Initialises params and batch_stats from a dummy batch of 2 of the configured shapes."""
    height, width = config.data.image_size
    images = jnp.zeros((2, height, width, 3), jnp.float32)
    captions = jnp.ones((2, config.data.max_length), jnp.int32)
    lengths = jnp.full((2,), config.data.max_length, jnp.int32)
    return dict(
        model.init(
            {"params": rng, "dropout": rng},
            images,
            captions,
            lengths,
            captions,
            lengths,
            train=False,
        )
    )


def loss_terms(
    outputs: dict[str, Any],
    labels: jax.Array,
    *,
    key: jax.Array,
    epoch: jax.Array,
    loss_config: Any,
) -> dict[str, jax.Array]:
    """SSAN objective and its parts from one training forward pass (ssan §3.1, §3.5).

    Args:
      outputs: `SsanModel.__call__` output (feats [B, ...] and logits [B, (K,) C], float32).
      labels: [B] int32 identity labels.
      key: PRNG key of the semi-hard mining (split per level).
      epoch: [] int32 0-based epoch (adaptive margin switch).
      loss_config: `config.loss` (level weights, alpha, beta, epoch_begin, gate_threshold).

    Returns:
      [] float32 scalars: loss, id_loss, rank_loss, id_loss_<level>, rank_loss_<level>,
      accuracy_image, accuracy_text (global classifiers).
    """
    weights = {
        "global": loss_config.global_weight,
        "parts": loss_config.part_weight,
        "relation": loss_config.relation_weight,
    }
    logits = outputs["logits"]
    terms = {}
    for level, level_key in zip(LEVELS, jax.random.split(key, len(LEVELS)), strict=True):
        id_fn = softmax_cross_entropy if level == "global" else part_identity_loss
        # ssan §3.1: image and caption CE summed (partner captions take no ID loss).
        terms[f"id_loss_{level}"] = id_fn(logits["image"][level], labels) + id_fn(
            logits["text"][level], labels
        )
        terms[f"rank_loss_{level}"] = compound_ranking_loss(
            outputs["image"][level],
            outputs["text"][level],
            outputs["partner"][level],
            labels,
            key=level_key,
            epoch=epoch,
            alpha=loss_config.alpha,
            beta=loss_config.beta,
            epoch_begin=loss_config.epoch_begin,
            gate_threshold=loss_config.gate_threshold,
        )
    terms["id_loss"] = sum(weights[lv] * terms[f"id_loss_{lv}"] for lv in LEVELS)
    terms["rank_loss"] = sum(weights[lv] * terms[f"rank_loss_{lv}"] for lv in LEVELS)
    terms["loss"] = terms["id_loss"] + terms["rank_loss"]
    for modality in ("image", "text"):
        hits = jnp.argmax(logits[modality]["global"], axis=-1) == labels
        terms[f"accuracy_{modality}"] = jnp.mean(hits.astype(jnp.float32))
    return terms


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
    """SSAN objective of one (micro-)batch; `training.step` differentiates and applies it.

    Args:
      model: the SsanModel.
      params: its parameters.
      batch_stats: BatchNorm statistics.
      batch: image [B, H, W, 3] float32, label [B], caption / partner_caption [B, T],
        length / partner_length [B].
      key: step key (split into dropout and mining keys).
      step: [] int32 optimizer step (the epoch of the adaptive margin).
      config: the config (`config.loss`).
      info: data facts (steps_per_epoch).

    Returns:
      (loss, (metrics from `loss_terms`, updated batch_stats)).
    """
    dropout_key, mining_key = jax.random.split(key)
    outputs, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["image"],
        batch["caption"],
        batch["length"],
        batch["partner_caption"],
        batch["partner_length"],
        train=True,
        rngs={"dropout": dropout_key},
        mutable=["batch_stats"],
    )
    terms = loss_terms(
        outputs,
        batch["label"],
        key=mining_key,
        epoch=step // info.steps_per_epoch,
        loss_config=config.loss,
    )
    return terms["loss"], (terms, mutated["batch_stats"])


def trunk_prefixes(config: Any) -> tuple[str, ...]:
    """Where `config.model.pretrained_trunk` goes: the ResNet under 'backbone/'."""
    del config
    return ("backbone/",)


def selectable_metrics(config: Any) -> set[str]:
    """Metric paths `evaluate` reports, for `eval.select_metric` (e.g. 'sum/R1')."""
    del config
    names = ("R1", "R5", "R10", "mAP", "mINP")
    return {f"{variant}/{name}" for variant in ssan_eval.SCORE_VARIANTS for name in names}


def evaluate(
    model: nn.Module,
    variables: dict[str, Any],
    config: Any,
    workdir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh,
    info: TrainDataInfo,
) -> dict[str, Any]:
    """Text->image retrieval on the test split (ssan §5); pictures and features to workdir/eval.

    Returns:
      See `ssan_eval.evaluate_test_split` (four score variants, chance R@1, sizes).
    """
    del info
    records = load_split(config.data, "test")
    if config.eval.max_gallery_images > 0:
        records = records[: config.eval.max_gallery_images]
    test = prepare_ssan_test(
        records, load_vocabulary(config, workdir), max_length=config.data.max_length
    )
    return ssan_eval.evaluate_test_split(
        model, variables, test, config, mesh=mesh, out_dir=Path(workdir) / "eval"
    )


def export_encoders(model: nn.Module, config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """`encode_image` (uint8 [b, H, W, 3]) and `encode_text` (word ids [b, T], lengths [b]):
    'embedding' = the three levels flattened, each L2-normalised, concatenated and divided by
    sqrt(3), so that 3 x the dot product is the method's summed cosine (ssan §5.2)."""
    from reid_jax.data import transforms as tf
    from reid_jax.export.bundle import Encoder, l2_normalize, normalize_uint8

    del info
    height, width = config.data.image_size
    levels = ("global", "parts", "relation")

    def embed(feats):
        flat = [l2_normalize(feats[lv].reshape(feats[lv].shape[0], -1)) for lv in levels]
        return {"embedding": jnp.concatenate(flat, axis=-1) / jnp.sqrt(3.0)}

    def encode_image(variables, images):
        x = normalize_uint8(images, tf.SSAN_MEAN, tf.SSAN_STD)
        return embed(model.apply(variables, x, train=False, method=model.encode_image))

    def encode_text(variables, captions, lengths):
        return embed(
            model.apply(variables, captions, lengths, train=False, method=model.encode_text)
        )

    length = int(config.data.max_length)
    return {
        "encode_image": Encoder(
            encode_image, [("image", "uint8", ("b", height, width, 3))], "3 levels, unit L2"
        ),
        "encode_text": Encoder(
            encode_text,
            [("caption", "int32", ("b", length)), ("length", "int32", ("b",))],
            "3 levels, unit L2",
        ),
    }


def export_preprocessing(config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """Host-side facts: image size and resize, the caption length and the vocabulary file."""
    del info
    return {
        "image_size": list(config.data.image_size),
        "resize": "bicubic_pil",
        "text_tokenizer": "words",
        "max_length": int(config.data.max_length),
    }
