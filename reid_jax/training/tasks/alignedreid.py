"""AlignedReID task: PK data, M mutually trained models, loss weighting, image re-id evaluation.

Per model i (alignedreid §4, §5), on the same PK batch:
  D_i   = euclidean matrix of the global features g (L2-normalised iff model.normalize_features)
  p, n  = batch-hard positive / negative per anchor, mined on D_i (§4.1)
  L_i   = w_g TRI(D_i; p, n) + w_l LTRI(local_i; p, n) + w_id CE(logits_i)          (§4.5)
        + w_pm KL-mutual + w_gdm mean_ab (D_i - sg D_j)^2 + w_ldm (same on local matrices)
With `loss.local_own_hard_samples` the local hinge mines its own pairs on the full N x N
aligned local matrix (§4.3), which the local-distance mutual term needs as well.

The M models are submodules `model_0 .. model_{M-1}` of one flax module, so one parameter tree,
one optimizer state and ONE jitted step update all of them. Peers enter every mutual term
through `stop_gradient`, so differentiating the sum of the per-model totals gives each model
exactly the gradient of its own total; Adam and coupled L2 act element-wise, so the single
optimizer equals M independent ones (§5.1). Evaluation lives in `alignedreid_eval.py`.

Deviation (§1.2): the PK sampler drops the last incomplete identity group in mutual training
too (the re-production keeps it there).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax import distances
from reid_jax.data import dataset_root, pipeline, transforms
from reid_jax.data.records import CameraImage
from reid_jax.losses import mutual, triplet
from reid_jax.losses.classification import softmax_cross_entropy
from reid_jax.models.alignedreid.model import AlignedReidModel
from reid_jax.training.tasks.base import TrainDataInfo

DATASETS = ("embedded", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected", "msmt17")
# Feature-normalisation floor in training (alignedreid §3.3: norm + 1e-12).
_NORM_EPS = 1e-12


class MutualAlignedReid(nn.Module):
    """M independent AlignedReID networks evaluated on the same images (alignedreid §5.1).

    Parameter tree: `model_{i}/...` with the `AlignedReidModel` layout under each prefix
    (an exported single model is `params['model_0']`).

    Attributes:
      num_models: M >= 1.
      model_kwargs: `AlignedReidModel` fields shared by every model (as a tuple of pairs so
        the module stays hashable).
    """

    num_models: int
    model_kwargs: tuple[tuple[str, Any], ...]

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool) -> tuple[dict[str, jnp.ndarray], ...]:
        """Runs every model.

        Args:
          images: [B, H, W, 3] float32 normalised images.
          train: training mode (apply with `mutable=['batch_stats']`).

        Returns:
          M dicts {'global': [B, C], 'local': [B, S, c], 'logits': [B, N]} float32.
        """
        kwargs = dict(self.model_kwargs)
        return tuple(
            AlignedReidModel(**kwargs, name=f"model_{i}")(images, train=train)
            for i in range(self.num_models)
        )


def _parse_records(dataset: str, root: str) -> list[CameraImage]:
    from reid_jax.data.formats import cuhk03, dukemtmc, market1501, msmt17

    if dataset in ("embedded", "market1501"):
        return market1501.load_market1501(root)
    if dataset == "dukemtmc":
        return dukemtmc.load_dukemtmc(root)
    if dataset.startswith("cuhk03_"):
        return cuhk03.load_cuhk03(root, variant=dataset.removeprefix("cuhk03_"))
    if dataset == "msmt17":
        return msmt17.load_msmt17(root)
    raise ValueError(f"config.data.dataset: unknown dataset '{dataset}', choose from {DATASETS}")


_load_records = dataset_root.cached_loader(_parse_records)
# data.dataset -> TFDS builder, for reading a prepared dataset (data.tfds_dir).
PREPARED_BUILDERS = {"embedded": "market1501", "market1501": "market1501"}


def load_split(data_config: Any, split: str) -> list[CameraImage]:
    """Records of 'train', 'query' or 'gallery' (cached per dataset and root).

    The gallery still holds Market-1501's -1 junk images; the evaluation protocol drops them.
    """
    return dataset_root.split_records(
        data_config,
        split,
        embedded_part="Market-1501",
        load=_load_records,
        builders=PREPARED_BUILDERS,
    )


def train_labels(records: list[CameraImage]) -> np.ndarray:
    """Training identities sorted ascending and mapped to 0..N-1 (alignedreid §1.2).

    Returns:
      int32 [len(records)] labels.
    """
    ids = np.asarray([r.person_id for r in records])
    return np.unique(ids, return_inverse=True)[1].astype(np.int32)


def make_train_data(
    config: Any, workdir: str | os.PathLike, *, shard_index: int, shard_count: int
) -> tuple[Any, TrainDataInfo]:
    """PK training stream of this process (alignedreid §1.1-1.2) and its data facts.

    `train.batch_size` is P x K with K = `data.images_per_identity`; an epoch is one pass over
    the identities, P at a time.
    """
    del workdir
    data = config.data
    k = int(data.images_per_identity)
    if k < 2 or config.train.batch_size % k:
        raise ValueError(
            f"config.train.batch_size {config.train.batch_size} must be a multiple "
            f"of config.data.images_per_identity {k} >= 2"
        )
    p = config.train.batch_size // k
    records = load_split(data, "train")
    labels = train_labels(records)
    num_ids = int(labels.max()) + 1 if len(labels) else 0
    if num_ids < p:
        raise ValueError(
            f"config.train.batch_size: P = {p} identities per batch exceeds the "
            f"{num_ids} training identities of {data.dataset}"
        )
    transform = functools.partial(
        transforms.alignedreid_train_resize,
        crop_prob=float(data.crop_prob),
        crop_ratio=float(data.crop_ratio),
    )
    loader = pipeline.make_pk_train_loader(
        labels,
        [r.image_path for r in records],
        p=p,
        k=k,
        image_size=tuple(data.image_size),
        seed=config.seed,
        transform=transform,
        num_workers=data.num_workers,
        shard_index=shard_index,
        shard_count=shard_count,
        bad_images=data.bad_images,
    )
    info = TrainDataInfo(
        num_examples=len(records),
        steps_per_epoch=pipeline.steps_per_epoch(num_ids, p),
        num_classes=num_ids,
        extras={"identities_per_batch": p, "images_per_identity": k},
    )
    return loader, info


def image_normalisation(config: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the step normalises the loader's uint8 images with (alignedreid §1.1)."""
    del config
    return transforms.ALIGNEDREID_MEAN, transforms.ALIGNEDREID_STD


def create_model(config: Any, info: TrainDataInfo) -> MutualAlignedReid:
    """Unpacks `config.model` into M AlignedReID networks with N = info.num_classes."""
    m = config.model
    kwargs = dict(
        num_classes=info.num_classes,
        local_dim=m.local_dim,
        backbone_depth=m.backbone_depth,
        width_multiplier=m.backbone_width,
        last_stride=m.last_stride,
        global_pool=m.global_pool,
        local_pool=m.local_pool,
        dtype=jnp.dtype(m.dtype),
    )
    if m.num_models < 1:
        raise ValueError(f"config.model.num_models must be >= 1, got {m.num_models}")
    return MutualAlignedReid(num_models=int(m.num_models), model_kwargs=tuple(kwargs.items()))


def init_variables(model: nn.Module, rng: jax.Array, config: Any) -> dict[str, Any]:
    """Initialises params and batch_stats of all models from a dummy batch of 2 images.

    Each `model_i` gets its own initialisation (flax folds the submodule name into the key).
    The initialisers draw from an 'rbg' key derived from `rng`: with threefry keys XLA compiles
    every one of the ~65 initialisers per ResNet separately (~20 s on a CPU for two small
    models), with RngBitGenerator in ~3 s. The draw is deterministic for a given backend.
    """
    height, width = config.data.image_size
    init_key = jax.random.key(jax.random.bits(rng, dtype=jnp.uint32), impl="rbg")
    return dict(model.init(init_key, jnp.zeros((2, height, width, 3), jnp.float32), train=False))


def normalize_rows(x: jax.Array, eps: float = _NORM_EPS) -> jax.Array:
    """L2-normalises the last axis: x / (||x|| + eps) (alignedreid §3.3, training form)."""
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def single_model_terms(
    outputs: dict[str, jax.Array], labels: jax.Array, *, loss_config: Any, normalize: bool
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """One model's own losses (alignedreid §4) and the matrices its peers need (§5.2).

    Args:
      outputs: {'global': [B, C], 'local': [B, S, c], 'logits': [B, N]} of one model.
      labels: [B] int32 identity labels.
      loss_config: `config.loss`.
      normalize: L2-normalise g and every stripe of L before any distance.

    Returns:
      (terms, shared): terms = [] float32 'global_triplet', 'local_triplet', 'id',
      'own_loss' (weighted sum), 'precision' (fraction of anchors with d_an > d_ap), 'dist_ap',
      'dist_an', 'id_accuracy'; shared = {'global_dist': [B, B], 'logits': [B, N] and, in
      own-hard mode, 'local_dist': [B, B]}.
    """
    g, local = outputs["global"], outputs["local"]
    if normalize:
        g, local = normalize_rows(g), normalize_rows(local)
    global_dist = distances.pairwise_euclidean(g, g)
    dist_ap, dist_an, pos_idx, neg_idx = triplet.hard_example_mining(global_dist, labels)

    def hinge(ap, an, margin):
        if margin > 0:
            return triplet.triplet_margin_loss(ap, an, margin=margin)
        return triplet.soft_margin_triplet_loss(ap, an)

    shared = {"global_dist": global_dist, "logits": outputs["logits"]}
    zero = jnp.zeros((), jnp.float32)
    terms = {"global_triplet": hinge(dist_ap, dist_an, loss_config.global_margin)}
    if loss_config.local_own_hard_samples:
        # §4.3 "own hard samples": mine on the full local matrix (also feeds L_ldm).
        shared["local_dist"] = distances.aligned_local_distance(local, local)
        local_ap, local_an, _, _ = triplet.hard_example_mining(shared["local_dist"], labels)
        terms["local_triplet"] = hinge(local_ap, local_an, loss_config.local_margin)
    elif loss_config.local_weight > 0:
        terms["local_triplet"] = triplet.local_triplet_loss(
            local, pos_idx, neg_idx, margin=loss_config.local_margin
        )
    else:
        terms["local_triplet"] = zero
    terms["id"] = (
        softmax_cross_entropy(outputs["logits"], labels) if loss_config.id_weight > 0 else zero
    )
    terms["own_loss"] = (
        loss_config.global_weight * terms["global_triplet"]
        + loss_config.local_weight * terms["local_triplet"]
        + loss_config.id_weight * terms["id"]
    )
    finite_an = jnp.isfinite(dist_an)
    terms["precision"] = jnp.mean((dist_an > dist_ap).astype(jnp.float32))
    terms["dist_ap"] = jnp.mean(dist_ap)
    terms["dist_an"] = jnp.sum(jnp.where(finite_an, dist_an, 0.0)) / jnp.maximum(
        jnp.sum(finite_an), 1
    )
    hits = jnp.argmax(outputs["logits"], axis=-1) == labels
    terms["id_accuracy"] = jnp.mean(hits.astype(jnp.float32))
    return terms, shared


def loss_terms(
    outputs: tuple[dict[str, jax.Array], ...],
    labels: jax.Array,
    *,
    loss_config: Any,
    normalize: bool,
) -> dict[str, jax.Array]:
    """Totals of all M models and their parts (alignedreid §4.5, §5.2).

    Args:
      outputs: M model output dicts (see `MutualAlignedReid`).
      labels: [B] int32 labels.
      loss_config: `config.loss`.
      normalize: feature normalisation flag.

    Returns:
      [] float32 scalars: 'loss' (sum of the M totals: the quantity differentiated),
      'model_{i}/<term>' for every term of `single_model_terms`, plus 'model_{i}/loss' and,
      with M > 1, 'model_{i}/probability_mutual', '.../global_distance_mutual',
      '.../local_distance_mutual'.
    """
    per_model = [
        single_model_terms(o, labels, loss_config=loss_config, normalize=normalize) for o in outputs
    ]
    totals = [terms["own_loss"] for terms, _ in per_model]
    mutual_terms = [{} for _ in per_model]
    if len(per_model) > 1:
        shared = [s for _, s in per_model]
        weights = {
            "probability_mutual": loss_config.probability_mutual_weight,
            "global_distance_mutual": loss_config.global_distance_mutual_weight,
            "local_distance_mutual": loss_config.local_distance_mutual_weight,
        }
        if weights["local_distance_mutual"] > 0 and not loss_config.local_own_hard_samples:
            raise ValueError(
                "config.loss.local_distance_mutual_weight > 0 needs "
                "config.loss.local_own_hard_samples=True (alignedreid §5.2)"
            )
        logits = [s["logits"] for s in shared] if weights["probability_mutual"] > 0 else None
        global_dists = [s["global_dist"] for s in shared]
        for i, term in enumerate(mutual.mutual_losses(logits, global_dists)):
            mutual_terms[i]["global_distance_mutual"] = term["distance_mutual"]
            if logits is not None:
                mutual_terms[i]["probability_mutual"] = term["probability_mutual"]
        if weights["local_distance_mutual"] > 0:
            local_dists = [s["local_dist"] for s in shared]
            for i, term in enumerate(mutual.mutual_losses(None, local_dists)):
                mutual_terms[i]["local_distance_mutual"] = term["distance_mutual"]
        for i, extra in enumerate(mutual_terms):
            totals[i] = totals[i] + sum(weights[name] * value for name, value in extra.items())
    metrics = {}
    for i, ((terms, _), extra) in enumerate(zip(per_model, mutual_terms, strict=True)):
        metrics.update({f"model_{i}/{name}": value for name, value in terms.items()})
        metrics.update({f"model_{i}/{name}": value for name, value in extra.items()})
        metrics[f"model_{i}/loss"] = totals[i]
    metrics["loss"] = sum(totals)
    return metrics


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
    """Sum of the M models' objectives on one PK (micro-)batch; `training.step` applies it.

    Adam and coupled L2 act element-wise, so one optimizer over the joint tree acts as one
    optimizer per model.

    Args:
      model: the MutualAlignedReid module.
      params: parameters of every `model_i`.
      batch_stats: their BatchNorm statistics.
      batch: image [B, H, W, 3] float32, label [B] int32.
      key: unused (the objective is deterministic given the batch).
      step: unused.
      config: the config (`config.loss`, `config.model.normalize_features`).
      info: unused.

    Returns:
      (loss, (metrics from `loss_terms`, updated batch_stats)).
    """
    del key, step, info
    outputs, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["image"],
        train=True,
        mutable=["batch_stats"],
    )
    terms = loss_terms(
        outputs,
        batch["label"],
        loss_config=config.loss,
        normalize=bool(config.model.normalize_features),
    )
    return terms["loss"], (terms, mutated["batch_stats"])


def trunk_prefixes(config: Any) -> tuple[str, ...]:
    """Where `config.model.pretrained_trunk` goes: every model's ResNet (all M start from it)."""
    return tuple(f"model_{i}/backbone/" for i in range(config.model.num_models))


def selectable_metrics(config: Any) -> set[str]:
    """Metric paths `evaluate` reports, for `eval.select_metric` (e.g. 'model_0/global/mAP')."""
    kinds = list(config.eval.distances)
    if config.eval.rerank:
        kinds += [f"{kind}_rerank" for kind in kinds]
    return {
        f"model_{i}/{kind}/{name}"
        for i in range(config.model.num_models)
        for kind in kinds
        for name in ("R1", "R5", "R10", "mAP")
    }


def evaluate(
    model: nn.Module,
    variables: dict[str, Any],
    config: Any,
    workdir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh,
    info: TrainDataInfo,
) -> dict[str, Any]:
    """Image re-id evaluation of every model (alignedreid §7-§8); see `alignedreid_eval`."""
    from reid_jax.training.tasks import alignedreid_eval

    del info
    return alignedreid_eval.evaluate(
        model,
        variables,
        config,
        workdir,
        mesh=mesh,
        query=load_split(config.data, "query"),
        gallery=load_split(config.data, "gallery"),
    )


def export_encoders(model: nn.Module, config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """`encode_image`: uint8 [b, H, W, 3] -> model_0's global feature, L2-normalised
    ('embedding' [b, C]; the dot product is 1 - d^2 / 2 of the normalised euclidean distance)."""
    from reid_jax.data import transforms as tf
    from reid_jax.export.bundle import Encoder, l2_normalize, normalize_uint8

    del info
    height, width = config.data.image_size

    def encode_image(variables, images):
        x = normalize_uint8(images, tf.ALIGNEDREID_MEAN, tf.ALIGNEDREID_STD)
        return {"embedding": l2_normalize(model.apply(variables, x, train=False)[0]["global"])}

    return {
        "encode_image": Encoder(
            encode_image, [("image", "uint8", ("b", height, width, 3))], "global feature, unit L2"
        )
    }


def export_preprocessing(config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """Host-side facts before `encode_image`: the size and the resize of the test transform."""
    del info
    return {"image_size": list(config.data.image_size), "resize": "bilinear_opencv"}
