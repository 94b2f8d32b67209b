"""Attribute-query scoring and metrics (attribute_reid §3.8, §4).

* `attribute_prediction_scores`: the baseline of §3.8 (1), see below.
* `protocol_metrics`, `chance_r1`: the attribute-query protocol's metrics, shared by every
  attribute-capable model (the joint space, APTM's prompts).

Attribute-prediction retrieval:

A model predicts each gallery image's attributes; a query vector scores an image by the
log-probability the predictions give it: the sum over the query's known fields of
log P_x(field = asked value), colour (and every other binary) column scored independently
with a sigmoid, softmax groups (Market age) with a log-softmax over the group. Higher =
better. Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reid_jax.evaluation import retrieval
from reid_jax.evaluation.protocols import RetrievalProtocol


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def attribute_prediction_scores(
    logits: np.ndarray,
    queries: np.ndarray,
    softmax_groups: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """Log-probability of each query vector under each image's predicted attributes.

    Args:
      logits: [N, A] attribute logits of the gallery images (model encoding).
      queries: [Q, A] in {-1, 0, 1}; a softmax group is one-hot (or all -1 = not asked).
      softmax_groups: (start, stop) spans scored with a log-softmax (the asked class).

    Returns:
      [Q, N] float64 scores.

    Raises:
      ValueError: shapes that do not fit, labels outside {-1, 0, 1}, or a known softmax
        group that is not one-hot.
    """
    logits = np.asarray(logits, np.float64)
    queries = np.asarray(queries)
    if logits.ndim != 2 or queries.ndim != 2 or queries.shape[1] != logits.shape[1]:
        raise ValueError(
            f"logits [N, A] and queries [Q, A] expected, got {logits.shape}, {queries.shape}"
        )
    if not np.isin(queries, (-1, 0, 1)).all():
        raise ValueError("query labels must be -1, 0 or 1")
    binary = np.ones(logits.shape[1], bool)
    scores = np.zeros((len(queries), len(logits)))
    for start, stop in softmax_groups:
        binary[start:stop] = False
        block = queries[:, start:stop]
        known = (block >= 0).all(axis=1)
        not_asked = (block < 0).all(axis=1)
        if (known & (block.sum(axis=1) != 1)).any() or (~known & ~not_asked).any():
            raise ValueError(f"softmax group {start}:{stop} must be one-hot or all -1")
        z = logits[:, start:stop]
        log_p = z - np.logaddexp.reduce(z, axis=1, keepdims=True)  # [N, k]
        scores += np.where(known[:, None], np.maximum(block, 0) @ log_p.T, 0.0)
    log_yes, log_no = _log_sigmoid(logits), _log_sigmoid(-logits)  # [N, A]
    asked_yes = ((queries == 1) & binary).astype(np.float64)
    asked_no = ((queries == 0) & binary).astype(np.float64)
    return scores + asked_yes @ log_yes.T + asked_no @ log_no.T


def protocol_metrics(scores: np.ndarray, protocol: RetrievalProtocol) -> dict[str, float]:
    """R1/R5/R10, step mAP and trapezoid mAP of attribute queries (attribute_reid §4).

    Relevant = same id (identical attribute vector, or PETA's semantic ID); junk only where
    the protocol has cameras (PETA: the query's own source image). Ranked with the image
    re-id metrics (stable order, sklearn-style AP with tie groups).

    Args:
      scores: [Q, G] float, higher = better.
      protocol: query_ids [Q], gallery_ids [G] (no id 0 or -1), optional cameras.

    Returns:
      {'R1', 'R5', 'R10', 'mAP' (step), 'mAP_trapezoid'} in percent.
    """
    if protocol.query_cams is None:  # no junk: cameras that never match
        query_cams = np.full(len(protocol.query_ids), -1)
        gallery_cams = np.full(len(protocol.gallery_ids), -2)
    else:
        query_cams, gallery_cams = protocol.query_cams, protocol.gallery_cams
    args = (-np.asarray(scores), protocol.query_ids, protocol.gallery_ids, query_cams, gallery_cams)
    out = retrieval.image_reid_metrics(*args, ap_mode="step")
    out["mAP_trapezoid"] = retrieval.image_reid_metrics(*args, ap_mode="trapezoid")["mAP"]
    return out


def chance_r1(protocol: RetrievalProtocol) -> float:
    """R1 of a random ranking in percent: mean over queries of relevant / candidate images."""
    relevant = protocol.query_ids[:, None] == protocol.gallery_ids[None, :]
    candidates = np.full(relevant.shape, True)
    if protocol.query_cams is not None:
        junk = relevant & (protocol.query_cams[:, None] == protocol.gallery_cams[None, :])
        relevant, candidates = relevant & ~junk, ~junk
    return 100.0 * float(np.mean(relevant.sum(1) / candidates.sum(1)))
