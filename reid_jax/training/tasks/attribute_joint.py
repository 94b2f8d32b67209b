"""Attribute-image joint space (Yin et al., attribute_reid §3): attribute queries -> images.

One task, three methods (`config.method`, §3.8):
  attribute_prediction   the image branch's attribute heads alone (L_attr); a query scores an
                         image by the log-probability the heads give its vector
  joint                  the joint space without adversary: stage 1 (L_attr + L_sid(φ)),
                         then stage 2 adds L_sid(ψ) and the ranking loss
  adversarial            the full model: stage 2 also trains the discriminator D and pushes
                         ψ with λ_adv L_adv (the semantic-consistent adversary, §3.3)

The two stages (§3.6) are one run: the step switches at `train.stage1_epochs`, and the
optimizer's per-group options start ψ and D at that epoch (frozen before, own Adam state; D
with β1 = 0.5) and drop the image branch to a tenth of its lr. All players update in one
jitted step; see `attribute_joint_loss` for why one sum gives each its own gradient.

Batch (P x K, identity-contiguous): image [B, H, W, 3], label [B] = PK group. Concepts of a
step: the vector of every identity in the batch (one per K rows) plus
`loss.random_concepts` vectors drawn uniformly from the training table (§3.6).
Evaluation lives in `attribute_joint_eval.py`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.data import attribute_examples, pipeline, transforms
from reid_jax.models.attribute.model import AttributeJointSpace, Discriminator
from reid_jax.training.tasks import attribute_joint_loss
from reid_jax.training.tasks.base import TrainDataInfo

METHODS = ("attribute_prediction", "joint", "adversarial")


def load_dataset(config: Any) -> attribute_examples.AttributeDataset:
    """The configured attribute dataset (parsed once per process)."""
    return attribute_examples.load_attribute_dataset(config.data, protocol=config.eval.protocol)


def make_train_data(
    config: Any, workdir: str | os.PathLike, *, shard_index: int, shard_count: int
) -> tuple[Any, TrainDataInfo]:
    """PK stream over identities (PETA: semantic IDs) and the attribute tables in `extras`."""
    del workdir
    if config.method not in METHODS:
        raise ValueError(f"config.method: unknown method '{config.method}', choose from {METHODS}")
    data = config.data
    k = int(data.images_per_identity)
    if k < 1 or config.train.batch_size % k:
        raise ValueError(
            f"config.train.batch_size {config.train.batch_size} must be a multiple "
            f"of config.data.images_per_identity {k}"
        )
    p = config.train.batch_size // k
    dataset = load_dataset(config)
    num_groups = len(dataset.group_attributes)
    if num_groups < p:
        raise ValueError(
            f"config.train.batch_size: P = {p} identities per batch exceeds the {num_groups} "
            f"training identities of {data.dataset}"
        )
    loader = pipeline.make_pk_train_loader(
        dataset.train_groups,
        list(dataset.train_paths),
        p=p,
        k=k,
        image_size=tuple(data.image_size),
        seed=config.seed,
        transform=functools.partial(transforms.pad_crop_train_resize, padding=int(data.pad_crop)),
        num_workers=data.num_workers,
        shard_index=shard_index,
        shard_count=shard_count,
        bad_images=data.bad_images,
    )
    info = TrainDataInfo(
        num_examples=len(dataset.train_paths),
        steps_per_epoch=pipeline.steps_per_epoch(num_groups, p),
        num_classes=num_groups,
        extras={
            "images_per_identity": k,
            "groups": [list(g) for g in dataset.groups],
            "softmax_groups": [list(g) for g in dataset.softmax_groups],
            "group_attributes": dataset.group_attributes.tolist(),
            "group_sids": dataset.group_sids.tolist(),
            "sid_attributes": dataset.sid_attributes.tolist(),
        },
    )
    return loader, info


def image_normalisation(config: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the step normalises the loader's uint8 images with (attribute_reid §3.6)."""
    del config
    return transforms.IMAGENET_MEAN, transforms.IMAGENET_STD


def create_model(config: Any, info: TrainDataInfo) -> AttributeJointSpace:
    """Unpacks `config.model` with the dataset's groups and S semantic IDs."""
    m = config.model
    return AttributeJointSpace(
        groups=tuple(tuple(g) for g in info.extras["groups"]),
        num_sids=len(info.extras["sid_attributes"]),
        embed_dim=int(m.embed_dim),
        reduce_dim=int(m.reduce_dim),
        backbone_depth=int(m.backbone_depth),
        width_multiplier=float(m.backbone_width),
        generator_hidden=tuple(m.generator_hidden),
        discriminator_hidden=tuple(m.discriminator_hidden),
        dtype=jnp.dtype(m.dtype),
    )


def init_variables(model: nn.Module, rng: jax.Array, config: Any) -> dict[str, Any]:
    """Initialises every player from 2 dummy images and 2 dummy vectors ('rbg' key, as the
    other ResNet tasks, for fast compilation of the initialisers)."""
    height, width = config.data.image_size
    num_columns = sum(len(g) for g in model.groups)
    init_key = jax.random.key(jax.random.bits(rng, dtype=jnp.uint32), impl="rbg")
    return dict(
        model.init(
            init_key,
            jnp.zeros((2, height, width, 3), jnp.float32),
            jnp.zeros((2, num_columns), jnp.float32),
            train=False,
        )
    )


def term_weights(config: Any) -> dict[str, float]:
    """Loss weights of the configured method (attribute_reid §3.6, §3.8)."""
    loss = config.loss
    weights = {
        "attr": float(loss.attribute_weight),
        "sid_image": float(loss.sid_weight),
        "sid_concept": float(loss.sid_weight),
        "rank": float(loss.ranking_weight),
        "adv": float(loss.adversarial_weight),
        "disc": 1.0,
    }
    if config.method == "attribute_prediction":
        weights.update(sid_image=0.0, sid_concept=0.0, rank=0.0, adv=0.0, disc=0.0)
    elif config.method == "joint":
        weights.update(adv=0.0, disc=0.0)
    return weights


def stage1_steps(config: Any, info: TrainDataInfo) -> int:
    """Optimizer steps of stage 1 (the whole run for attribute-prediction retrieval)."""
    if config.method == "attribute_prediction":
        return np.iinfo(np.int32).max
    return int(config.train.stage1_epochs) * info.steps_per_epoch


def _tables(info: TrainDataInfo) -> tuple[jax.Array, jax.Array, jax.Array]:
    extras = info.extras
    return (
        jnp.asarray(np.asarray(extras["group_attributes"], np.int32)),
        jnp.asarray(np.asarray(extras["group_sids"], np.int32)),
        jnp.asarray(np.asarray(extras["sid_attributes"], np.int32)),
    )


def loss_fn(
    model: AttributeJointSpace,
    params: Any,
    batch_stats: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    step: jax.Array,
    config: Any,
    info: TrainDataInfo,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """The joint objective of one PK batch, stage chosen by `step` (see the module docstring).

    Args:
      model: the AttributeJointSpace module.
      params, batch_stats: its variables.
      batch: image [B, H, W, 3] float32, label [B] int32 PK group.
      key: draws the random concept vectors.
      step: the optimizer step (stage 2 from `stage1_steps`).
      config: `config.method`, `config.loss`, `config.data.images_per_identity`.
      info: data facts with the attribute tables.

    Returns:
      (loss, (metrics: the loss terms, 'stage', 'attribute_accuracy' of the heads on known
      binary columns, 'disc_real_accuracy'; new batch_stats)).
    """
    group_attributes, group_sids, sid_attributes = _tables(info)
    labels = batch["label"]
    k = int(info.extras["images_per_identity"])
    batch_groups = labels[::k]
    random_sids = jax.random.randint(
        key, (int(config.loss.random_concepts),), 0, sid_attributes.shape[0]
    )
    concept_labels = jnp.concatenate([group_attributes[batch_groups], sid_attributes[random_sids]])
    concept_sids = jnp.concatenate([group_sids[batch_groups], random_sids])
    outputs, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["image"],
        concept_labels,
        train=True,
        mutable=["batch_stats"],
    )
    discriminator = Discriminator(
        num_attributes=concept_labels.shape[1], hidden=tuple(model.discriminator_hidden)
    )
    image_labels = group_attributes[labels]
    stage = jnp.where(step >= stage1_steps(config, info), 2, 1)
    loss, terms = attribute_joint_loss.joint_objective(
        outputs["image"],
        outputs["concepts"],
        lambda p, e: discriminator.apply({"params": p}, e),
        params["discriminator"],
        outputs["sid_weights"],
        image_labels=image_labels,
        image_sids=group_sids[labels],
        concept_labels=concept_labels,
        concept_sids=concept_sids,
        stage=stage,
        weights=term_weights(config),
        margin=float(config.loss.margin),
        sid_scale=float(config.loss.sid_scale),
        softmax_groups=tuple(tuple(g) for g in info.extras["softmax_groups"]),
    )
    predicted = outputs["image"]["attribute_logits"] > 0
    known = image_labels >= 0
    correct = (predicted == (image_labels == 1)) & known
    metrics = dict(
        terms,
        loss=loss,
        stage=stage.astype(jnp.float32),
        attribute_accuracy=jnp.sum(correct) / jnp.maximum(jnp.sum(known), 1),
        disc_real_accuracy=jnp.mean((outputs["real"]["real_logits"] > 0).astype(jnp.float32)),
    )
    return loss, (metrics, mutated["batch_stats"])


def trunk_prefixes(config: Any) -> tuple[str, ...]:
    """Where `config.model.pretrained_trunk` goes: the image branch's ResNet."""
    del config
    return ("image/backbone/",)


def selectable_metrics(config: Any) -> set[str]:
    """Metric paths `evaluate` reports (e.g. 'joint/mAP', 'prediction/R1', 'recognition/mA')."""
    from reid_jax.training.tasks import attribute_joint_eval

    recognition = ("mA", "accuracy", "precision", "recall", "F1")
    return {
        f"{variant}/{name}"
        for variant in attribute_joint_eval.score_variants(config)
        for name in attribute_joint_eval.METRIC_NAMES
    } | {f"recognition/{name}" for name in recognition}


def evaluate(
    model: nn.Module,
    variables: dict[str, Any],
    config: Any,
    workdir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh,
    info: TrainDataInfo,
) -> dict[str, Any]:
    """Attribute->image retrieval on the test protocol (attribute_reid §4)."""
    from reid_jax.training.tasks import attribute_joint_eval

    del info
    return attribute_joint_eval.evaluate(
        model, variables, config, workdir, mesh=mesh, dataset=load_dataset(config)
    )


def export_encoders(model: nn.Module, config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """`encode_image` (uint8 [b, H, W, 3]) -> 'embedding' φ (unit L2) and 'attribute_logits';
    `encode_attributes` (float32 [b, A] model-encoded vectors) -> 'embedding' ψ (unit L2)."""
    from reid_jax.export.bundle import Encoder, l2_normalize, normalize_uint8

    height, width = config.data.image_size
    num_columns = sum(len(g) for g in info.extras["groups"])

    def encode_image(variables, images):
        x = normalize_uint8(images, transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
        out = model.apply(variables, x, train=False, method=model.encode_image)
        return {
            "embedding": l2_normalize(out["embedding"]),
            "attribute_logits": out["attribute_logits"],
        }

    def encode_attributes(variables, vectors):
        out = model.apply(variables, vectors, train=False, method=model.encode_attributes)
        return {"embedding": l2_normalize(out)}

    return {
        "encode_image": Encoder(
            encode_image, [("image", "uint8", ("b", height, width, 3))], "φ unit L2 + logits"
        ),
        "encode_attributes": Encoder(
            encode_attributes, [("attributes", "float32", ("b", num_columns))], "ψ unit L2"
        ),
    }


def export_preprocessing(config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """Host-side facts: image size and resize; the model encoding of attribute vectors."""
    return {
        "image_size": list(config.data.image_size),
        "resize": "bilinear_opencv",
        "dataset": config.data.dataset,
        "softmax_groups": [list(g) for g in info.extras["softmax_groups"]],
    }
