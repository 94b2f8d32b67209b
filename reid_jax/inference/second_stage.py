"""Second stages of a search (`reid-jax search --rerank`): the method's own re-scoring of the
first stage's top candidates.

* Sentences with an APTM bundle: the candidates' images and the sentence go through the cross
  encoder (`score_pairs`, the class-1 ITM logit) and are ordered as APTM's evaluation orders
  them on one device (`itm_rerank.assemble_scores`, "fused" with reference_gpus = 1: the ITM
  logit with a 0.002 min-max cosine tie-breaker; candidates outside the re-scored set keep
  their cosine order below).
* Photos: k-reciprocal re-ranking (alignedreid §8, `evaluation.reranking`) of the query and
  its candidates, on the euclidean distance of the unit embeddings. The reference re-ranks the
  whole gallery; a search re-ranks the candidates only, so its k-reciprocal sets are those of
  the candidate set (identical when the candidates hold every image within reach of the k1
  neighbourhoods, the usual case for k candidates >> k1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reid_jax.inference.bundle import Bundle, BundleError
from reid_jax.inference.index import load_images

K_RECIPROCAL = {"k1": 20, "k2": 6, "lambda_value": 0.3}  # alignedreid §8 defaults
PHOTO_CANDIDATES = 100  # first-stage candidates a photo query re-ranks by default


def itm_rescore(
    bundle: Bundle,
    candidate_paths: list[str],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """float32 [k] class-1 ITM logits of one sentence against each candidate image.

    Args:
      bundle: an APTM bundle (with `score_pairs`).
      candidate_paths: k image files.
      input_ids, attention_mask: int32 [T] the tokenised sentence.
      batch_size: pairs per call.
    """
    if "score_pairs" not in bundle.encoders:
        raise BundleError(f"{bundle.path}: the {bundle.task} bundle has no ITM pair scorer")
    images = load_images([Path(p) for p in candidate_paths], bundle)
    count = len(images)
    ids = np.repeat(np.asarray(input_ids, np.int32)[None], count, axis=0)
    mask = np.repeat(np.asarray(attention_mask, np.int32)[None], count, axis=0)
    out = bundle.encode("score_pairs", images, ids, mask, batch_size=batch_size)
    return out["itm_logit"].astype(np.float32)


def itm_order(cosine: np.ndarray, candidates: np.ndarray, itm: np.ndarray) -> np.ndarray:
    """The rows of `cosine` by APTM's single-device fused score.

    Args:
      cosine: float32 [N] first-stage scores of the rows searched.
      candidates: int [k] rows that were re-scored.
      itm: float32 [k] their ITM logits.

    Returns:
      int [N] row order, best first.
    """
    from reid_jax.evaluation.itm_rerank import assemble_scores

    if len(cosine) == 1:
        return np.zeros(1, np.int64)
    fused = assemble_scores(cosine[None], candidates[None], itm[None], reference_gpus=1)[0]
    return np.lexsort((np.arange(len(fused)), -fused))


def k_reciprocal_order(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates re-ranked by k-reciprocal distance.

    Args:
      query: float32 [d] unit embedding of the photo.
      candidates: float32 [k, d] unit embeddings of its first-stage candidates.

    Returns:
      (order int [k] best first, re-ranked distances float32 [k] in that order).
    """
    from reid_jax.evaluation.reranking import k_reciprocal_rerank

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(2.0 - 2.0 * (a @ b.T), 0.0)).astype(np.float32)

    query = np.asarray(query, np.float32)[None]
    candidates = np.asarray(candidates, np.float32)
    reranked = k_reciprocal_rerank(
        distance(query, candidates),
        distance(query, query),
        distance(candidates, candidates),
        **K_RECIPROCAL,
    )[0]
    order = np.lexsort((np.arange(len(reranked)), reranked))
    return order, reranked[order]
