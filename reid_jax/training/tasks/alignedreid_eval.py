"""AlignedReID evaluation: eval-mode features, global / local / summed distances, re-ranking.

For every model of the run (alignedreid §7-§8):
  features   one eval-mode forward per query and gallery image (no flip), global g [C] and
             local L [S, c], L2-normalised iff model.normalize_features (test form: norm + eps)
  distances  'global' = euclidean of g (negative squares set to 0, no floor, §3.1);
             'local' = aligned shortest-path distance of L, in tiles (§3.2);
             'global_local' = plain sum of the two (§7.2)
  metrics    Market protocol (junk = same id and camera, -1 gallery images dropped, queries
             without a valid positive skipped): R1/5/10 and mAP (`config.eval.ap_mode`);
             each kind again after k-reciprocal re-ranking of the same kind (§8.4), whose
             query-query and gallery-gallery matrices are built the same way.
Rank-list pictures of model_0's best available kind go to workdir/eval/.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax import distances, sharding
from reid_jax.data import pipeline, transforms
from reid_jax.data.records import CameraImage
from reid_jax.evaluation import extract

KINDS = ("global", "local", "global_local")
# Test-time normalisation floor (alignedreid §3.3: norm + float32 machine epsilon).
_TEST_NORM_EPS = float(np.finfo(np.float32).eps)


@functools.lru_cache(maxsize=8)
def _encoder(model: nn.Module, mesh: jax.sharding.Mesh, normalize: bool):
    """Jitted, sharded eval-mode encoder of all models (cached across evaluations)."""

    def encode(variables, batch):
        outputs = model.apply(variables, batch["image"], train=False)
        feats = []
        for out in outputs:
            g, local = out["global"], out["local"]
            if normalize:
                g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + _TEST_NORM_EPS)
                local = local / (jnp.linalg.norm(local, axis=-1, keepdims=True) + _TEST_NORM_EPS)
            feats.append({"global": g, "local": local})
        return tuple(feats)

    return extract.make_sharded_encoder(encode, mesh)


def extract_features(
    model: nn.Module,
    variables: dict[str, Any],
    image_paths: Sequence[str],
    config: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[dict[str, np.ndarray], ...]:
    """Eval-mode features of every model for a list of images (file order kept).

    Args:
      model: the MutualAlignedReid module.
      variables: its variables (params, batch_stats).
      image_paths: [n] image files.
      config: the config (data.image_size, eval.batch_size, model.normalize_features).
      mesh: device mesh; the batch size is rounded up to a multiple of its data axis.

    Returns:
      M dicts {'global': float32 [n, C], 'local': float32 [n, S, c]}.
    """
    shards = sharding.data_parallel_size(mesh)
    batch_size = -(-int(config.eval.batch_size) // shards) * shards
    batches = pipeline.make_eval_batches(
        list(image_paths),
        image_size=tuple(config.data.image_size),
        batch_size=batch_size,
        transform=transforms.alignedreid_test_transform,
    )
    encoder = _encoder(model, mesh, bool(config.model.normalize_features))
    return extract.extract_features(encoder, variables, batches, mesh)


_squared_euclidean = jax.jit(functools.partial(distances.pairwise_euclidean, squared=True))


def global_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Test-time euclidean distances (alignedreid §3.1: negatives to 0, no 1e-12 floor).

    Args:
      x: [M, C] float32 global features.
      y: [N, C] float32 global features.

    Returns:
      [M, N] float32 NumPy distances.
    """
    return np.sqrt(np.asarray(_squared_euclidean(x, y)))


def distance_matrix(
    kind: str, x: dict[str, np.ndarray], y: dict[str, np.ndarray], *, local_block: int
) -> np.ndarray:
    """One distance kind between two feature sets (alignedreid §7.2).

    Args:
      kind: 'global', 'local' or 'global_local' (plain sum, no weighting).
      x: {'global': [M, C], 'local': [M, S, c]}.
      y: {'global': [N, C], 'local': [N, S, c]}.
      local_block: tile size of the chunked aligned local distance.

    Returns:
      [M, N] float32 NumPy distances.
    """
    if kind not in KINDS:
        raise ValueError(f"config.eval.distances: unknown kind '{kind}', choose from {KINDS}")
    out = None
    if kind in ("global", "global_local"):
        out = global_distance(x["global"], y["global"])
    if kind in ("local", "global_local"):
        local = distances.chunked_aligned_local_distance(x["local"], y["local"], block=local_block)
        out = local if out is None else out + local
    return out


def chance_r1(
    query_ids: np.ndarray, gallery_ids: np.ndarray, query_cams: np.ndarray, gallery_cams: np.ndarray
) -> float:
    """R1 of a random ranking in percent under the Market protocol.

    Mean over queries with a valid positive of (#valid positives / #non-junk gallery images).
    """
    same_id = query_ids[:, None] == gallery_ids[None, :]
    junk = same_id & (query_cams[:, None] == gallery_cams[None, :])
    positives = (same_id & ~junk).sum(1)
    candidates = (~junk).sum(1)
    valid = positives > 0
    return float(100.0 * np.mean(positives[valid] / candidates[valid]))


def evaluate_model(
    query_feats: dict[str, np.ndarray],
    gallery_feats: dict[str, np.ndarray],
    protocol: Any,
    config: Any,
) -> tuple[dict[str, dict[str, float]], dict]:
    """All configured distance kinds (and their re-ranked versions) of one model.

    Args:
      query_feats: {'global': [Q, C], 'local': [Q, S, c]}.
      gallery_feats: {'global': [G, C], 'local': [G, S, c]}.
      protocol: `evaluation.protocols.RetrievalProtocol` (ids and cameras).
      config: the config (`config.eval`).

    Returns:
      (metrics, query_gallery): metrics = kind or f'{kind}_rerank' -> {'R1','R5','R10','mAP'}
      in percent; query_gallery = kind -> [Q, G] float32 distances (for rank lists).
    """
    from reid_jax.evaluation.reranking import k_reciprocal_rerank
    from reid_jax.evaluation.retrieval import image_reid_metrics

    ev = config.eval
    q, g = query_feats, gallery_feats
    metrics, query_gallery = {}, {}

    def score(dist):
        return image_reid_metrics(
            dist,
            protocol.query_ids,
            protocol.gallery_ids,
            protocol.query_cams,
            protocol.gallery_cams,
            ap_mode=ev.ap_mode,
        )

    for kind in ev.distances:
        q_g = distance_matrix(kind, q, g, local_block=ev.local_block)
        query_gallery[kind] = q_g
        metrics[kind] = score(q_g)
        if ev.rerank:
            # alignedreid §8.4: query-query and gallery-gallery matrices of the same kind.
            q_q = distance_matrix(kind, q, q, local_block=ev.local_block)
            g_g = distance_matrix(kind, g, g, local_block=ev.local_block)
            reranked = k_reciprocal_rerank(
                q_g, q_q, g_g, k1=ev.rerank_k1, k2=ev.rerank_k2, lambda_value=ev.rerank_lambda
            )
            metrics[f"{kind}_rerank"] = score(reranked)
    return metrics, query_gallery


def _write_rank_lists(out_dir: Path, protocol: Any, dist: np.ndarray, eval_config: Any) -> None:
    """Best-first and worst-first rank-list pictures of the query images (process 0)."""
    from reid_jax.evaluation.rank_list import render_first_and_worst
    from reid_jax.evaluation.retrieval import market_junk_mask

    junk = market_junk_mask(
        protocol.query_ids, protocol.gallery_ids, protocol.query_cams, protocol.gallery_cams
    )
    render_first_and_worst(
        out_dir,
        num_queries=eval_config.rank_list_queries,
        top_k=eval_config.rank_list_top_k,
        queries=protocol.query_paths,
        gallery_paths=protocol.gallery_paths,
        similarity=dist,
        query_ids=protocol.query_ids,
        gallery_ids=protocol.gallery_ids,
        gallery_junk_mask=junk,
        is_distance=True,
        queries_are_images=True,
    )


def _save_features(path: Path, protocol: Any, feats: dict[str, np.ndarray], num_q: int) -> None:
    """model_0's global and local features for `reid-jax evaluate --features` (euclidean
    levels; the report's 'sum' variant is the global + local distance, alignedreid §7.2)."""
    from reid_jax.evaluation import features_file

    features_file.save_features(
        str(path),
        query_features={k: v[:num_q] for k, v in feats.items()},
        gallery_features={k: v[num_q:] for k, v in feats.items()},
        query_ids=protocol.query_ids,
        gallery_ids=protocol.gallery_ids,
        query_cams=protocol.query_cams,
        gallery_cams=protocol.gallery_cams,
        query_paths=protocol.query_paths,
        gallery_paths=protocol.gallery_paths,
        similarity_kind="euclidean",
    )


def evaluate(
    model: nn.Module,
    variables: dict[str, Any],
    config: Any,
    workdir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh,
    query: list[CameraImage],
    gallery: list[CameraImage],
) -> dict[str, Any]:
    """Image re-id evaluation of every model of the run; table to stdout/log, pictures to eval/.

    Args:
      model: the MutualAlignedReid module.
      variables: its variables.
      config: the config.
      workdir: run folder (pictures under workdir/eval).
      mesh: device mesh.
      query: query records; gallery: bounding_box_test records (-1 junk dropped here).

    Returns:
      {'model_{i}': {kind | f'{kind}_rerank': {'R1','R5','R10','mAP'}}, 'chance_R1': percent,
       'num_queries': Q, 'num_gallery': G}.
    """
    from reid_jax.evaluation.protocols import camera_protocol
    from reid_jax.evaluation.report import print_results

    protocol = camera_protocol(query, gallery)
    num_q = len(protocol.query_ids)
    per_model = extract_features(
        model, variables, protocol.query_paths + protocol.gallery_paths, config, mesh
    )
    results: dict[str, Any] = {}
    rank_dist = None
    for i, feats in enumerate(per_model):
        query_feats = {k: v[:num_q] for k, v in feats.items()}
        gallery_feats = {k: v[num_q:] for k, v in feats.items()}
        results[f"model_{i}"], query_gallery = evaluate_model(
            query_feats, gallery_feats, protocol, config
        )
        if i == 0:
            best = [k for k in ("global_local", "global", "local") if k in query_gallery]
            rank_dist = query_gallery[best[0]] if best else None
    results["chance_R1"] = chance_r1(
        protocol.query_ids, protocol.gallery_ids, protocol.query_cams, protocol.gallery_cams
    )
    results["num_queries"], results["num_gallery"] = num_q, len(protocol.gallery_ids)
    if jax.process_index() == 0:
        for i in range(len(per_model)):
            print_results(
                f"image re-id, AlignedReID model_{i} on {config.data.dataset}: {num_q} queries "
                f"x {results['num_gallery']} images (chance R1 {results['chance_R1']:.2f}%, "
                f"mAP {config.eval.ap_mode}):",
                results[f"model_{i}"],
            )
        if config.eval.save_features:
            _save_features(Path(workdir) / "eval" / "features.npz", protocol, per_model[0], num_q)
        if rank_dist is not None and config.eval.rank_list_queries > 0:
            _write_rank_lists(Path(workdir) / "eval", protocol, rank_dist, config.eval)
    return results
