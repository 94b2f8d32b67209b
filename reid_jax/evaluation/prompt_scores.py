"""APTM attribute answers from prompt scores: recognition (aptm §6.4) and attribute queries.

Input: the class-1 ITM logit of every (image, prompt) pair of an attribute prompt set,
`scores` [N, 2A], where prompt 2i states label 0 of attribute i and prompt 2i + 1 label 1
(aptm §2.1; MALS: 27 attributes, PA-100K: 26).

* Recognition (aptm §6.4): attribute i is predicted as the label whose prompt scores higher
  (argmax over the pair; a tie picks label 0, as `argmax` does).
* Attribute queries (attribute_reid §4 with APTM, issue 11): a query fixes some labels
  (-1 = don't care). An image's score is the sum, over the fixed attributes, of the margin of
  the asked prompt over its opposite, `s[2i + q_i] - s[2i + 1 - q_i]`. This is a design
  choice (the APTM paper scores single prompts only). An image whose predicted labels match
  every fixed attribute has every term > 0; each term is that attribute's own
  recognition margin, so no attribute dominates by the offset of its prompt pair.

Pure NumPy, shapes in the docstrings.
"""

from __future__ import annotations

import numpy as np


def _pairs(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] % 2:
        raise ValueError(f"scores must be [N, 2A], got shape {scores.shape}")
    return scores.reshape(scores.shape[0], -1, 2)


def predict_labels(scores: np.ndarray) -> np.ndarray:
    """[N, 2A] prompt scores -> [N, A] int64 labels (argmax of each prompt pair)."""
    return np.argmax(_pairs(scores), axis=-1).astype(np.int64)


def query_scores(scores: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Attribute-query scores of every image, higher = better match.

    Args:
      scores: [N, 2A] prompt scores of N gallery images.
      queries: [Q, A] labels in {-1, 0, 1} (-1 = not asked).

    Returns:
      [Q, N] float64: sum over asked attributes of (asked prompt - opposite prompt).

    Raises:
      ValueError: shapes that do not fit, or labels outside {-1, 0, 1}.
    """
    pairs = _pairs(scores)  # [N, A, 2]
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != pairs.shape[1]:
        raise ValueError(f"queries must be [Q, {pairs.shape[1]}], got shape {queries.shape}")
    if not np.isin(queries, (-1, 0, 1)).all():
        raise ValueError("query labels must be -1, 0 or 1")
    margin = pairs[..., 1] - pairs[..., 0]  # [N, A]: positive = label 1 preferred
    sign = np.where(queries == 1, 1.0, np.where(queries == 0, -1.0, 0.0))  # [Q, A]
    return sign @ margin.T
