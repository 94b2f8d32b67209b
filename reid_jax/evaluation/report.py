"""Evaluate a saved features file: metrics per feature level, re-ranking, table, JSON, rank list.

Variants evaluated (one row each in the table):
  * every feature level (cosine similarity of the flattened, L2-normalised features, or, for
    similarity_kind "euclidean", the test-time euclidean distance of alignedreid §3.1 and the
    aligned local distance for [*, K, D] levels);
  * "sum" when there are several levels: the sum of the levels' cosine matrices (SSAN's final
    score, ssan §5.2) or of their distances (AlignedReID global + local, alignedreid §7.2);
  * "precomputed" when the file holds a similarity matrix (e.g. APTM's ITM-assembled scores);
  * "<variant>+rerank" with k-reciprocal re-ranking (camera protocol only; cosine levels use
    the euclidean distance of the normalised features, sqrt(2 - 2 cos)).
Protocol: Market-1501 (`image_reid_metrics`) when the file has cameras, otherwise text->image
(`retrieval_metrics`). Both report step mAP and the trapezoidal mAP of the reference code
("mAP_trapezoid": SSAN's logged AP; the AlignedReID re-production's reported mAP).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import numpy as np
from absl import logging

from reid_jax import distances
from reid_jax.evaluation import rank_list, reranking, retrieval
from reid_jax.evaluation.features_file import Features, load_features


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.reshape(x.shape[0], -1).astype(np.float32)
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=1, keepdims=True), 1e-12))


def _euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Test-time euclidean distance (negative squared values set to 0, no floor)."""
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    sq = np.sum(x * x, 1)[:, None] + np.sum(y * y, 1)[None, :] - 2 * (x @ y.T)
    return np.sqrt(np.maximum(sq, 0)).astype(np.float32)


def _level_distance(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance of one level between two feature sets (lower = closer)."""
    if kind == "cosine":
        return np.sqrt(np.maximum(2 - 2 * (_normalised(x) @ _normalised(y).T), 0))
    if x.ndim == 3:
        return distances.chunked_aligned_local_distance(x, y)
    return _euclidean(x, y)


def _level_score(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Score of one level (higher = better): cosine, or minus the distance."""
    if kind == "cosine":
        return _normalised(x) @ _normalised(y).T
    return -_level_distance(kind, x, y)


def _variant_names(features: Features) -> list[str]:
    names = list(features.query_features)
    if len(names) > 1:
        names.append("sum")
    if features.similarity is not None:
        names.append("precomputed")
    return names


def _scores(features: Features, variant: str) -> np.ndarray:
    if variant == "precomputed":
        return features.similarity
    levels = list(features.query_features) if variant == "sum" else [variant]
    total = None
    for level in levels:
        s = _level_score(
            features.similarity_kind,
            features.query_features[level],
            features.gallery_features[level],
        )
        total = s if total is None else total + s
    return total.astype(np.float32)


def _rerank_inputs(features: Features, variant: str) -> tuple[np.ndarray, ...]:
    """(q_g, q_q, g_g) distances of a variant, summed over levels for "sum"."""
    levels = list(features.query_features) if variant == "sum" else [variant]
    out = None
    for level in levels:
        q, g = features.query_features[level], features.gallery_features[level]
        kind = features.similarity_kind
        d = tuple(_level_distance(kind, a, b) for a, b in ((q, g), (q, q), (g, g)))
        out = d if out is None else tuple(o + n for o, n in zip(out, d, strict=True))
    return out


def _metrics(features: Features, scores: np.ndarray) -> dict[str, float]:
    if features.has_cameras:
        args = (-scores, features.query_ids, features.gallery_ids)
        cams = (features.query_cams, features.gallery_cams)
        out = retrieval.image_reid_metrics(*args, *cams, ap_mode="step")
        trap = retrieval.image_reid_metrics(*args, *cams, ap_mode="trapezoid")
    else:
        args = (scores, features.query_ids, features.gallery_ids)
        out = retrieval.retrieval_metrics(*args, ap_mode="step")
        trap = retrieval.retrieval_metrics(*args, ap_mode="trapezoid")
    out["mAP_trapezoid"] = trap["mAP"]
    return out


def _evaluate(features: Features, rerank: bool) -> Iterator[tuple[str, dict, np.ndarray]]:
    """Yields (variant name, metrics, scores) for every variant (see module docstring)."""
    if rerank and not features.has_cameras:
        logging.warning("re-ranking needs the camera protocol (query/gallery cams); skipped")
    for variant in _variant_names(features):
        scores = _scores(features, variant)
        yield variant, _metrics(features, scores), scores
        if rerank and features.has_cameras and variant != "precomputed":
            reranked = -reranking.k_reciprocal_rerank(*_rerank_inputs(features, variant))
            yield f"{variant}+rerank", _metrics(features, reranked), reranked


def evaluate_features(features: Features, *, rerank: bool = False) -> dict[str, dict[str, float]]:
    """Metrics of every variant of a features file.

    Args:
      features: loaded features (`features_file.load_features`).
      rerank: also evaluate k-reciprocal re-ranked variants (camera protocol only).

    Returns:
      {variant: metrics} in percent: text protocol {'R1', 'R5', 'R10', 'mAP', 'mINP',
      'mAP_trapezoid'}; camera protocol {'R1', 'R5', 'R10', 'mAP', 'mAP_trapezoid'}.
    """
    return {name: metrics for name, metrics, _ in _evaluate(features, rerank)}


def format_metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Aligned plain-text table: one row per variant, one column per metric (2 decimals).

    Args:
      metrics: {row name: {metric name: value}}; missing or NaN values print as "-".

    Returns:
      The table as a string (no trailing newline).
    """
    columns: list[str] = []
    for row in metrics.values():
        columns += [c for c in row if c not in columns]

    def cell(value) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.2f}"

    table = [["variant"] + columns]
    table += [[name] + [cell(row.get(c)) for c in columns] for name, row in metrics.items()]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    pad = lambda i, v: v.ljust(widths[i]) if i == 0 else v.rjust(widths[i])  # noqa: E731
    lines = ["  ".join(pad(i, v) for i, v in enumerate(r)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_results(title: str, metrics: dict[str, dict[str, float]]) -> None:
    """Prints a run's result table to stdout: the title line, then `format_metrics_table`.

    Every task reports its evaluation this way (process 0 only), so runs of different methods
    read alike and the table is in the output even when logs go elsewhere.

    Args:
      title: one line naming the protocol and sizes, e.g. 'text->image retrieval, 718 queries
        x 359 images (chance R@1 1.02%):'.
      metrics: {row name: {metric name: value}}.
    """
    print(f"{title}\n{format_metrics_table(metrics)}", flush=True)


def _write_json(path: str, obj) -> None:
    clean = {
        k: {m: (None if math.isnan(v) else v) for m, v in row.items()} for k, row in obj.items()
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(clean, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def run_evaluate_features(
    features_path: str, out_dir: str, *, rerank: bool = False, rank_list_queries: int = 8
) -> dict[str, dict[str, float]]:
    """`reid-jax evaluate --features FILE.npz`: metrics table, metrics.json and a rank list.

    Prints the table, writes out_dir/metrics.json and, when the file has gallery_paths and
    query texts or paths, out_dir/rank_list.png and rank_list.html for the last variant
    (re-ranked / summed / precomputed when present). All files are written atomically.

    Args:
      features_path: features .npz (`features_file` layout).
      out_dir: output directory (created if needed).
      rerank: also evaluate k-reciprocal re-ranked variants (camera protocol only).
      rank_list_queries: rows of the rank-list picture (0 = no picture).

    Returns:
      {variant: metrics} as `evaluate_features`.
    """
    features = load_features(features_path)
    os.makedirs(out_dir, exist_ok=True)
    metrics, last_scores = {}, None
    for name, row, scores in _evaluate(features, rerank):
        metrics[name], last_scores = row, scores
    print(format_metrics_table(metrics))
    _write_json(os.path.join(out_dir, "metrics.json"), metrics)
    queries = features.query_texts or features.query_paths
    if rank_list_queries > 0 and features.gallery_paths and queries and last_scores is not None:
        junk = None
        if features.has_cameras:
            junk = retrieval.market_junk_mask(
                features.query_ids,
                features.gallery_ids,
                features.query_cams,
                features.gallery_cams,
            )
        rank_list.render_rank_list(
            queries=list(queries),
            gallery_paths=list(features.gallery_paths),
            similarity=last_scores,
            query_ids=features.query_ids,
            gallery_ids=features.gallery_ids,
            out_png=os.path.join(out_dir, "rank_list.png"),
            out_html=os.path.join(out_dir, "rank_list.html"),
            num_queries=rank_list_queries,
            gallery_junk_mask=junk,
            queries_are_images=features.query_texts is None,
        )
    return metrics
