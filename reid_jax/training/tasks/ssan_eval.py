"""SSAN text->image evaluation (ssan §5): sharded feature extraction, the four score variants,
metrics, rank-list pictures and the features file.

Cosine matrices [Q, G] for the global, PFL (flattened parts) and PRL (flattened relation)
levels and their sum (the method's score, ssan §5.2); R@1/5/10, mAP and mINP for each.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from reid_jax.data import pipeline
from reid_jax.data.ssan_examples import SsanTestExamples
from reid_jax.evaluation import extract

LEVELS = ("global", "parts", "relation")


@functools.lru_cache(maxsize=8)
def _encoders(model: nn.Module, mesh: jax.sharding.Mesh) -> tuple[Any, Any]:
    """Jitted, sharded eval-mode image and text encoders (cached across evaluations)."""

    def images(variables, batch):
        return model.apply(variables, batch["image"], train=False, method=model.encode_image)

    def texts(variables, batch):
        return model.apply(
            variables, batch["caption"], batch["length"], train=False, method=model.encode_text
        )

    return (
        extract.make_sharded_encoder(images, mesh),
        extract.make_sharded_encoder(texts, mesh),
    )


def encode_test_split(
    model: nn.Module,
    variables: dict[str, Any],
    test: SsanTestExamples,
    config: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[dict, dict]:
    """Eval-mode features of the gallery images and the caption queries.

    Args:
      model: the SsanModel.
      variables: its variables.
      test: gallery image paths and encoded caption queries.
      config: the config (`config.data.image_size`, `config.eval.batch_size`).
      mesh: device mesh; every padded batch is split on 'data'.

    Returns:
      (image_feats, text_feats): dicts level -> host float32 [G, ...] / [Q, ...].
    """
    encode_images, encode_texts = _encoders(model, mesh)
    batch_size = config.eval.batch_size
    image_batches = pipeline.make_eval_batches(
        test.gallery_paths, image_size=tuple(config.data.image_size), batch_size=batch_size
    )
    text_batches = pipeline.make_eval_text_batches(
        test.query_captions, test.query_lengths, batch_size=batch_size
    )
    image_feats = extract.extract_features(encode_images, variables, image_batches, mesh)
    text_feats = extract.extract_features(encode_texts, variables, text_batches, mesh)
    return image_feats, text_feats


def similarity(
    query_feats: dict[str, np.ndarray],
    gallery_feats: dict[str, np.ndarray],
    levels: tuple[str, ...],
) -> np.ndarray:
    """Summed cosine similarity over feature levels (ssan §5.2).

    Each level is flattened per sample and L2-normalised; the sum of the level cosines equals
    one matmul of the concatenated normalised features.

    Args:
      query_feats: level -> float32 [Q, ...].
      gallery_feats: level -> float32 [G, ...].
      levels: the levels to sum (one level = that level's cosine).

    Returns:
      [Q, G] float32 similarities.
    """

    def normalised(feats, n):
        flat = [feats[lv].reshape(n, -1).astype(np.float32) for lv in levels]
        # ssan §5.2 has no epsilon at test time; the floor only guards all-zero features.
        return np.concatenate(
            [f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12) for f in flat], 1
        )

    queries = normalised(query_feats, len(query_feats[levels[0]]))
    gallery = normalised(gallery_feats, len(gallery_feats[levels[0]]))
    return queries @ gallery.T


def chance_r1(query_ids: np.ndarray, gallery_ids: np.ndarray) -> float:
    """R@1 of a random ranking in percent: mean over queries of (#positives / G)."""
    positives = (np.asarray(query_ids)[:, None] == np.asarray(gallery_ids)[None, :]).mean(1)
    return float(100.0 * positives.mean())


SCORE_VARIANTS = {
    "global": ("global",),
    "parts": ("parts",),
    "relation": ("relation",),
    "sum": LEVELS,
}


def _write_outputs(
    out_dir: Path,
    test: SsanTestExamples,
    score: np.ndarray,
    image_feats: dict,
    text_feats: dict,
    eval_config: Any,
) -> None:
    """Rank-list pictures (first and worst queries) and the features file (process 0)."""
    from reid_jax.evaluation.rank_list import render_first_and_worst

    render_first_and_worst(
        out_dir,
        num_queries=eval_config.rank_list_queries,
        top_k=eval_config.rank_list_top_k,
        queries=test.query_texts,
        gallery_paths=test.gallery_paths,
        similarity=score,
        query_ids=test.query_ids,
        gallery_ids=test.gallery_ids,
    )
    if eval_config.save_features:
        _save_features(out_dir / "features.npz", test, image_feats, text_feats)


def _save_features(path: Path, test: SsanTestExamples, image_feats: dict, text_feats: dict) -> None:
    """Per-level query/gallery features for `reid-jax evaluate --features` (cosine levels;
    the report's 'sum' variant is the SSAN score)."""
    from reid_jax.evaluation import features_file

    features_file.save_features(
        str(path),
        query_features={lv: text_feats[lv] for lv in LEVELS},
        gallery_features={lv: image_feats[lv] for lv in LEVELS},
        query_ids=test.query_ids,
        gallery_ids=test.gallery_ids,
        query_texts=test.query_texts,
        gallery_paths=test.gallery_paths,
        similarity_kind="cosine",
    )


def evaluate_test_split(
    model: nn.Module,
    variables: dict[str, Any],
    test: SsanTestExamples,
    config: Any,
    *,
    mesh: jax.sharding.Mesh,
    out_dir: Path,
) -> dict[str, Any]:
    """Encodes the test split and scores all four variants; pictures and features to out_dir.

    Args:
      model: the SsanModel.
      variables: its variables (eval mode: running BN statistics).
      test: gallery images and caption queries.
      config: the config (`config.data`, `config.eval`).
      mesh: device mesh (batches split on 'data').
      out_dir: folder for rank lists and features.npz (written by process 0 only).

    Returns:
      {'global'|'parts'|'relation'|'sum': {'R1','R5','R10','mAP','mINP'} in percent
       ('sum' is the method's score), 'chance_R1': percent, 'num_queries', 'num_gallery'}.
    """
    from reid_jax.evaluation.report import print_results
    from reid_jax.evaluation.retrieval import retrieval_metrics

    image_feats, text_feats = encode_test_split(model, variables, test, config, mesh)
    results: dict[str, Any] = {}
    for variant, levels in SCORE_VARIANTS.items():
        # One [Q, G] matrix at a time (ICFG-PEDES: 1.6 GB each); 'sum' comes last and is kept.
        score = similarity(text_feats, image_feats, levels)
        metrics = retrieval_metrics(
            score, test.query_ids, test.gallery_ids, ap_mode=config.eval.ap_mode
        )
        results[variant] = {k: float(v) for k, v in metrics.items()}
    results["chance_R1"] = chance_r1(test.query_ids, test.gallery_ids)
    results["num_queries"], results["num_gallery"] = len(test.query_ids), len(test.gallery_ids)
    if jax.process_index() == 0:
        print_results(
            f"text->image retrieval, {results['num_queries']} queries x "
            f"{results['num_gallery']} images (chance R@1 {results['chance_R1']:.2f}%):",
            {v: results[v] for v in SCORE_VARIANTS},
        )
        _write_outputs(out_dir, test, score, image_feats, text_feats, config.eval)
    return results
