"""Attribute->image evaluation of the joint-space task (attribute_reid §3.7, §3.8, §4).

1. Gallery images -> φ (L2-normalised embedding) and the heads' attribute logits (eval mode,
   batches split over 'data').
2. Query vectors -> ψ (L2-normalised concepts).
3. Score variants, each ranked over the whole gallery:
     joint        cos(ψ(a_q), φ(x))                                         (§3.7)
     prediction   Σ log P_x(field = asked value) from the heads          (§3.8 (1))
   ('attribute_prediction' runs report only 'prediction': their ψ is untrained.)
4. Metrics: R1/R5/R10 and step mAP (the protocol's AP), trapezoid mAP beside it; junk only
   where the protocol has cameras (PETA: the query's own image). Ids are compared by exact
   attribute vector (Market, Duke) or semantic ID (PETA).
5. Attribute recognition of the heads on the gallery images (each image carries its
   identity's labels): mA and the instance metrics (attribute_reid §7), a binary column
   predicted by logit > 0, a one-hot group (Market age) by its argmax.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from reid_jax.data import pipeline, transforms
from reid_jax.data.attribute_examples import AttributeDataset
from reid_jax.evaluation import attributes, extract
from reid_jax.evaluation.attribute_retrieval import (
    attribute_prediction_scores,
    chance_r1,
    protocol_metrics,
)

METRIC_NAMES = ("R1", "R5", "R10", "mAP", "mAP_trapezoid")


def score_variants(config: Any) -> tuple[str, ...]:
    """The reported score variants of the configured method, in table order."""
    if config.method == "attribute_prediction":
        return ("prediction",)
    return ("joint", "prediction")


@functools.lru_cache(maxsize=8)
def _encoders(model: nn.Module, mesh: jax.sharding.Mesh):
    """Jitted, sharded eval-mode image encoder and the attribute encoder (cached)."""

    def images(variables, batch):
        out = model.apply(variables, batch["image"], train=False, method=model.encode_image)
        embedding = out["embedding"]
        norm = jax.numpy.linalg.norm(embedding, axis=-1, keepdims=True)
        return {"embedding": embedding / (norm + 1e-12), "logits": out["attribute_logits"]}

    def concepts(variables, attributes):
        out = model.apply(variables, attributes, train=False, method=model.encode_attributes)
        return out / (jax.numpy.linalg.norm(out, axis=-1, keepdims=True) + 1e-12)

    return extract.make_sharded_encoder(images, mesh), jax.jit(concepts)


def encode(
    model: nn.Module,
    variables: dict[str, Any],
    dataset: AttributeDataset,
    config: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(gallery {'embedding' [G, d], 'logits' [G, A]}, query concepts [Q, d]) on the host."""
    encode_images, encode_concepts = _encoders(model, mesh)
    batches = pipeline.make_eval_batches(
        list(dataset.gallery_paths),
        image_size=tuple(config.data.image_size),
        batch_size=config.eval.batch_size,  # divides the data shards (run_setup checks it)
        transform=transforms.imagenet_test_transform,
    )
    gallery = extract.extract_features(encode_images, variables, batches, mesh)
    queries = np.asarray(encode_concepts(variables, dataset.query_attributes.astype(np.float32)))
    return gallery, queries


def predicted_columns(logits: np.ndarray, softmax_groups) -> np.ndarray:
    """[N, A] logits -> [N, A] {0, 1}: logit > 0, one-hot argmax inside softmax groups."""
    predicted = (np.asarray(logits) > 0).astype(np.int64)
    for start, stop in softmax_groups:
        block = np.zeros_like(predicted[:, start:stop])
        block[np.arange(len(block)), np.argmax(logits[:, start:stop], axis=1)] = 1
        predicted[:, start:stop] = block
    return predicted


def variant_scores(
    variant: str, gallery: dict[str, np.ndarray], queries: np.ndarray, dataset: AttributeDataset
) -> np.ndarray:
    """[Q, G] scores of one variant (see the module docstring)."""
    if variant == "joint":
        return queries @ gallery["embedding"].T
    if variant == "prediction":
        return attribute_prediction_scores(
            gallery["logits"], dataset.query_attributes, dataset.softmax_groups
        ).astype(np.float32)
    raise ValueError(f"unknown score variant '{variant}'")


def evaluate(
    model: nn.Module,
    variables: dict[str, Any],
    config: Any,
    workdir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh,
    dataset: AttributeDataset,
) -> dict[str, Any]:
    """Encodes, scores every variant and reports (process 0 prints and draws rank lists).

    Returns:
      {variant: {METRIC_NAMES}, 'chance_R1', 'num_queries', 'num_gallery'}.
    """
    from reid_jax.evaluation.report import print_results

    gallery, queries = encode(model, variables, dataset, config, mesh)
    scores = {v: variant_scores(v, gallery, queries, dataset) for v in score_variants(config)}
    results: dict[str, Any] = {v: protocol_metrics(s, dataset.protocol) for v, s in scores.items()}
    results["chance_R1"] = chance_r1(dataset.protocol)
    known = dataset.gallery_attributes >= 0
    predicted = predicted_columns(gallery["logits"], dataset.softmax_groups)
    recognition = attributes.attribute_metrics(
        np.where(known, predicted, 0), np.where(known, dataset.gallery_attributes, 0)
    )
    results["recognition"] = {k: float(v) for k, v in recognition.items()}
    results["num_queries"] = len(dataset.query_attributes)
    results["num_gallery"] = len(dataset.gallery_paths)
    if jax.process_index() == 0:
        print_results(
            f"attribute->image retrieval ({config.method}), {results['num_queries']} queries x "
            f"{results['num_gallery']} images (chance R1 {results['chance_R1']:.2f}%):",
            {v: results[v] for v in scores},
        )
        print_results(
            "attribute recognition of the heads on the gallery images:",
            {"heads": results["recognition"]},
        )
        from reid_jax.evaluation.rank_list import render_first_and_worst

        best = score_variants(config)[0]
        render_first_and_worst(
            Path(workdir) / "eval",
            num_queries=config.eval.rank_list_queries,
            top_k=config.eval.rank_list_top_k,
            queries=dataset.query_texts(),
            gallery_paths=dataset.gallery_paths,
            similarity=scores[best],
            query_ids=dataset.protocol.query_ids,
            gallery_ids=dataset.protocol.gallery_ids,
        )
    return results
