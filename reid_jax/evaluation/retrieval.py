"""Retrieval metrics: CMC / R@K, mAP (step or trapezoidal AP), mINP.

Two protocols:
  * `retrieval_metrics`: text->image person search as IRRA/APTM evaluate it (aptm §6.3; every
    gallery item of the query's identity is relevant, no junk); `ap_mode="trapezoid"` gives
    the interpolated AP that the official SSAN code logs (ssan §5.3).
  * `image_reid_metrics`: the Market-1501 protocol of open-reid / the AlignedReID
    re-production (alignedreid §7.3-7.5): same-id-same-camera and id -1 gallery entries are
    junk, queries without a valid positive are skipped, CMC with first-match-break.

Every metric is a function of the 0-based ranks of each query's positives among its valid
(non-junk) gallery items, so no full argsort is needed: `rank_positives` counts, for each
positive, how many valid items score higher (one vectorised pass over the query's row per
positive, rows grouped by their number of positives), or, when queries have many positives,
sorts the rows' values and binary-searches the positives. Both are NumPy on chunks of
queries with no Python loop over queries.

Ties: the reference evaluators order exactly tied scores arbitrarily (unstable torch/numpy
sorts). Here ranks break ties by gallery index (lower index first, like a stable sort), so
results are deterministic (scores are compared in float32, as the references' torch / NumPy
float32 matrices). The AP of `image_reid_metrics` instead follows scikit-learn's
`average_precision_score`, which the re-production calls: exactly tied scores form one
threshold of the precision-recall curve, so its AP does not depend on the tie order.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

AP_MODES = ("step", "trapezoid")
# Elements of one query chunk: 2^21 float32 = 8 MB, small enough to stay in cache across the
# per-positive passes.
_CHUNK_ELEMENTS = 1 << 21
# Use the sort backend when queries average more positives than this (each positive costs two
# passes over the row in the counting backend; a row sort costs about as much as ~5 passes).
_SORT_BACKEND_MIN_MEAN_POSITIVES = 24.0


@dataclasses.dataclass(frozen=True)
class PositiveRanks:
    """Ranks of every query's positives, sorted by rank (slot p < num_positives is valid).

    Attributes:
      num_positives: [Q] int64 number of positives (relevant, non-junk gallery items).
      num_valid: [Q] int64 number of non-junk gallery items.
      rank: [Q, P] int64 0-based rank among valid items, ties broken by gallery index.
      num_better: [Q, P] int64 valid items with a strictly higher score.
      num_better_or_tied: [Q, P] int64 valid items with a score >= (includes the positive).
      positives_better: [Q, P] int64 positives with a strictly higher score.
      positives_better_or_tied: [Q, P] int64 positives with a score >= (includes itself).
    """

    num_positives: np.ndarray
    num_valid: np.ndarray
    rank: np.ndarray
    num_better: np.ndarray
    num_better_or_tied: np.ndarray
    positives_better: np.ndarray
    positives_better_or_tied: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """[Q, P] bool, True on real (non-padding) positive slots."""
        return np.arange(self.rank.shape[1])[None, :] < self.num_positives[:, None]


def _check_inputs(scores: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be [Q, G], got shape {scores.shape}")
    if query_ids.shape != (scores.shape[0],):
        raise ValueError(f"query_ids shape {query_ids.shape} != ({scores.shape[0]},)")
    if gallery_ids.shape != (scores.shape[1],):
        raise ValueError(f"gallery_ids shape {gallery_ids.shape} != ({scores.shape[1]},)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")


def _same_id_table(query_ids: np.ndarray, gallery_ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Gallery indices of each query's identity, ascending, padded with -1: ([Q, P], [Q])."""
    order = np.argsort(gallery_ids, kind="stable")
    uniq, starts, counts = np.unique(gallery_ids[order], return_index=True, return_counts=True)
    if uniq.size == 0:
        return np.zeros((query_ids.size, 0), np.int64), np.zeros(query_ids.size, np.int64)
    slot = np.minimum(np.searchsorted(uniq, query_ids), uniq.size - 1)
    count = np.where(uniq[slot] == query_ids, counts[slot], 0).astype(np.int64)
    cols = np.arange(int(count.max(initial=0)))
    gather = np.minimum(starts[slot][:, None] + cols[None, :], order.size - 1)
    idx = np.where(cols[None, :] < count[:, None], order[gather], -1)
    return idx.astype(np.int64), count


def _drop_junk_positives(
    idx: np.ndarray, count: np.ndarray, junk: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Removes junk entries from padded positive lists, keeping ascending order."""
    if idx.shape[1] == 0:
        return idx, count
    rows = np.arange(idx.shape[0])[:, None]
    bad = (idx < 0) | junk[rows, np.maximum(idx, 0)]
    order = np.argsort(bad, axis=1, kind="stable")
    idx = np.where(np.take_along_axis(bad, order, 1), -1, np.take_along_axis(idx, order, 1))
    count = np.sum(~bad, axis=1)
    width = int(count.max()) if count.size else 0
    return idx[:, :width], count


def _batched_searchsorted(
    sorted_rows: np.ndarray, row: np.ndarray, value: np.ndarray, right: bool
) -> np.ndarray:
    """np.searchsorted per (row, value) pair on ascending rows (NaN sorts last)."""
    lo = np.zeros(row.shape, np.int64)
    hi = np.full(row.shape, sorted_rows.shape[1], np.int64)
    for _ in range(int(np.ceil(np.log2(sorted_rows.shape[1] + 1))) + 1):
        active = lo < hi
        mid = (lo + hi) // 2
        x = sorted_rows[row, np.minimum(mid, sorted_rows.shape[1] - 1)]
        go_right = active & ((x <= value) if right else (x < value))
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _count_chunk(block: np.ndarray, pos_idx: np.ndarray, num_pos: np.ndarray, use_sort: bool):
    """Per positive of a chunk of queries: (num_better, num_better_or_tied, stable rank, score).

    Args:
      block: [m, G] float32 scores, junk set to NaN (never counted).
      pos_idx: [m, P] int64 positive gallery indices (-1 padding).
      num_pos: [m] int64, non-increasing (rows sorted by number of positives).
      use_sort: sort backend instead of counting passes.
    """
    m, g = block.shape
    width = pos_idx.shape[1]
    rows = np.arange(m)
    pos_score = block[rows[:, None], np.maximum(pos_idx, 0)]
    better = np.zeros((m, width), np.int64)
    better_or_tied = np.zeros((m, width), np.int64)
    if use_sort:
        neg_sorted = np.sort(-block, axis=1)  # ascending -score == descending score, NaN last
        r, p = np.nonzero(pos_idx >= 0)
        better[r, p] = _batched_searchsorted(neg_sorted, r, -pos_score[r, p], right=False)
        better_or_tied[r, p] = _batched_searchsorted(neg_sorted, r, -pos_score[r, p], right=True)
    else:
        buf = np.empty((m, g), bool)
        for p in range(width):
            active = int(np.count_nonzero(num_pos > p))  # a prefix: rows sorted by num_pos
            part, ref = block[:active], pos_score[:active, p, None]
            better[:active, p] = np.count_nonzero(np.greater(part, ref, out=buf[:active]), axis=1)
            better_or_tied[:active, p] = np.count_nonzero(
                np.greater_equal(part, ref, out=buf[:active]), axis=1
            )
    rank = better.copy()
    # Stable tie-break: add the tied valid items with a lower gallery index (rare; only rows
    # with a tie are scanned).
    tr, tp = np.nonzero((better_or_tied - better > 1) & (pos_idx >= 0))
    cols = np.arange(g)
    step = max(1, _CHUNK_ELEMENTS // max(g, 1))
    for s in range(0, len(tr), step):
        r, p = tr[s : s + step], tp[s : s + step]
        same = (block[r] == pos_score[r, p][:, None]) & (cols[None, :] < pos_idx[r, p][:, None])
        rank[r, p] += np.count_nonzero(same, axis=1)
    return better, better_or_tied, rank, pos_score


def _group_counts(scores_sorted: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Among rank-sorted positives: how many score strictly higher, and higher-or-equal."""
    width = scores_sorted.shape[1]
    slots = np.broadcast_to(np.arange(width), scores_sorted.shape)
    new_group = np.ones(scores_sorted.shape, bool)
    new_group[:, 1:] = scores_sorted[:, 1:] != scores_sorted[:, :-1]
    first = np.maximum.accumulate(np.where(new_group, slots, 0), axis=1)
    end_group = np.ones(scores_sorted.shape, bool)
    end_group[:, :-1] = new_group[:, 1:] | ~mask[:, 1:]
    last = np.minimum.accumulate(np.where(end_group, slots, width)[:, ::-1], axis=1)[:, ::-1]
    return np.where(mask, first, 0), np.where(mask, last + 1, 0)


def rank_positives(
    scores: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    *,
    junk_mask: np.ndarray | None = None,
) -> PositiveRanks:
    """Ranks of every query's positives among its valid gallery items (higher score first).

    Positives are the gallery items with the query's id that are not junk; junk items are
    removed from the ranking (neither positive nor negative).

    Args:
      scores: [Q, G] float similarity, higher = better. NaN is rejected.
      query_ids: [Q] int identities.
      gallery_ids: [G] int identities.
      junk_mask: optional [Q, G] bool, True where a gallery item is junk for that query.

    Returns:
      PositiveRanks with P = the largest number of positives of any query.
    """
    scores = np.asarray(scores, np.float32)
    query_ids = np.asarray(query_ids).reshape(-1)
    gallery_ids = np.asarray(gallery_ids).reshape(-1)
    _check_inputs(scores, query_ids, gallery_ids)
    num_q, num_g = scores.shape
    pos_idx, num_pos = _same_id_table(query_ids, gallery_ids)
    if junk_mask is not None:
        junk_mask = np.asarray(junk_mask, bool)
        if junk_mask.shape != scores.shape:
            raise ValueError(f"junk_mask shape {junk_mask.shape} != scores {scores.shape}")
        pos_idx, num_pos = _drop_junk_positives(pos_idx, num_pos, junk_mask)
        num_valid = num_g - np.count_nonzero(junk_mask, axis=1)
    else:
        num_valid = np.full(num_q, num_g, np.int64)
    width = pos_idx.shape[1]
    out = {k: np.zeros((num_q, width), np.int64) for k in ("better", "tied", "rank")}
    pos_score = np.zeros((num_q, width), np.float32)
    use_sort = num_q > 0 and num_pos.mean() > _SORT_BACKEND_MIN_MEAN_POSITIVES
    order = np.argsort(-num_pos, kind="stable")
    step = max(1, _CHUNK_ELEMENTS // max(num_g, 1))

    def chunk(start: int) -> None:
        rows = order[start : start + step]
        block = scores[rows]
        if junk_mask is not None:
            np.copyto(block, np.nan, where=junk_mask[rows])
        better, tied, rank, ps = _count_chunk(block, pos_idx[rows], num_pos[rows], use_sort)
        out["better"][rows], out["tied"][rows], out["rank"][rows] = better, tied, rank
        pos_score[rows] = ps

    starts = list(range(0, num_q if width else 0, step))
    if len(starts) > 1 and (os.cpu_count() or 1) > 1:  # NumPy releases the GIL in its loops
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(chunk, starts))
    else:
        for start in starts:
            chunk(start)
    mask = np.arange(width)[None, :] < num_pos[:, None]
    by_rank = np.argsort(np.where(mask, out["rank"], num_g + 1), axis=1, kind="stable")
    sort = lambda a: np.take_along_axis(a, by_rank, axis=1)  # noqa: E731
    pos_better, pos_tied = _group_counts(sort(pos_score), mask)
    return PositiveRanks(
        num_positives=num_pos,
        num_valid=num_valid.astype(np.int64),
        rank=sort(out["rank"]),
        num_better=sort(out["better"]),
        num_better_or_tied=sort(out["tied"]),
        positives_better=pos_better,
        positives_better_or_tied=pos_tied,
    )


def average_precision(ranks: PositiveRanks, *, ap_mode: str = "step", tie_groups: bool = False):
    """Per-query AP from positive ranks.

    Args:
      ranks: output of `rank_positives`.
      ap_mode: "step" (mean precision at each positive) or "trapezoid" (ssan §5.3 /
        alignedreid §7.5: mean over positives of the average of the precision just before and
        at the positive, with precision 1 before the first rank).
      tie_groups: score exactly tied items as one threshold, like scikit-learn's
        `average_precision_score` (step = sklearn >= 0.19, trapezoid = sklearn <= 0.18);
        otherwise use the stable ranks.

    Returns:
      [Q] float64 AP in [0, 1]; NaN for queries without positives.
    """
    if ap_mode not in AP_MODES:
        raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")
    mask = ranks.mask
    if tie_groups:
        hits_at, seen_at = ranks.positives_better_or_tied, ranks.num_better_or_tied
        hits_before, seen_before = ranks.positives_better, ranks.num_better
    else:
        slot = np.arange(ranks.rank.shape[1])[None, :]
        hits_at, seen_at = slot + 1, ranks.rank + 1
        hits_before, seen_before = np.broadcast_to(slot, ranks.rank.shape), ranks.rank
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = hits_at / np.maximum(seen_at, 1)
        if ap_mode == "trapezoid":
            before = np.where(seen_before > 0, hits_before / np.maximum(seen_before, 1), 1.0)
            precision = 0.5 * (precision + before)
        total = np.sum(np.where(mask, precision, 0.0), axis=1)
        return np.where(ranks.num_positives > 0, total / ranks.num_positives, np.nan)


def _cmc_and_inp(ranks: PositiveRanks, ks: Sequence[int]) -> tuple[dict, np.ndarray]:
    has_pos = ranks.num_positives > 0
    first = np.where(
        has_pos, ranks.rank[:, 0] if ranks.rank.shape[1] else 0, np.iinfo(np.int64).max
    )
    hits = {k: first < k for k in ks}
    last_slot = np.maximum(ranks.num_positives - 1, 0)
    if ranks.rank.shape[1]:
        last = np.take_along_axis(ranks.rank, last_slot[:, None], 1)[:, 0]
    else:
        last = np.zeros_like(ranks.num_positives)
    inp = np.where(has_pos, ranks.num_positives / (last + 1.0), np.nan)
    return hits, inp


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def retrieval_metrics(
    similarity: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ap_mode: str = "step",
) -> dict[str, float]:
    """Text->image (or any no-junk) retrieval metrics as IRRA/APTM compute them (aptm §6.3).

    A gallery item is relevant iff it has the query's id. Per query, with r_1 < ... < r_n the
    0-based ranks of its n positives (ties broken by gallery index):
      R@K  = [r_1 < K] (so K > G gives the fraction of queries with any positive);
      AP   = step: mean_i i / (r_i + 1); trapezoid (SSAN, ssan §5.3):
             mean_i ((i - 1) / r_i (or 1 if r_i = 0) + i / (r_i + 1)) / 2;
      INP  = n / (r_n + 1).
    Queries without any positive: counted as misses in R@K (IRRA averages its CMC over all
    queries) and excluded from mAP / mINP (where IRRA would produce NaN). If no query has a
    positive, mAP and mINP are NaN.

    Args:
      similarity: [Q, G] float scores, higher = better.
      query_ids: [Q] int identities.
      gallery_ids: [G] int identities.
      ks: ranks K for R@K.
      ap_mode: "step" (standard, IRRA/APTM) or "trapezoid" (official SSAN code).

    Returns:
      {'R1', 'R5', 'R10' (one f"R{k}" per k), 'mAP', 'mINP'}: Python floats in percent.
    """
    ks = _check_ks(ks)
    ranks = rank_positives(similarity, query_ids, gallery_ids)
    ap = average_precision(ranks, ap_mode=ap_mode)
    hits, inp = _cmc_and_inp(ranks, ks)
    num_q = len(ranks.num_positives)
    if num_q == 0:
        raise ValueError("no queries")
    out = {f"R{k}": 100.0 * float(np.mean(hits[k])) for k in ks}
    valid = ranks.num_positives > 0
    if not valid.all():
        logging.warning("%d of %d queries have no positive in the gallery", (~valid).sum(), num_q)
    out["mAP"] = 100.0 * float(np.mean(ap[valid])) if valid.any() else float("nan")
    out["mINP"] = 100.0 * float(np.mean(inp[valid])) if valid.any() else float("nan")
    return out


def market_junk_mask(
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
) -> np.ndarray:
    """[Q, G] bool junk of the Market-1501 protocol (alignedreid §7.3).

    Junk = gallery id -1, or same id and same camera as the query. Distractors (id 0) are not
    junk; they stay as negatives.
    """
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    query_cams, gallery_cams = np.asarray(query_cams), np.asarray(gallery_cams)
    same = (gallery_ids[None, :] == query_ids[:, None]) & (
        gallery_cams[None, :] == query_cams[:, None]
    )
    return same | (gallery_ids == -1)[None, :]


def image_reid_metrics(
    distance: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ap_mode: str = "step",
) -> dict[str, float]:
    """Image->image re-id metrics with the Market-1501 protocol (alignedreid §7.3-7.5).

    Junk (`market_junk_mask`) is removed from each query's ranking; queries left without a
    valid positive are skipped and excluded from every average (logged); if none is left a
    ValueError is raised, as in open-reid. CMC uses open-reid's first_match_break: R@K =
    [first valid match at 0-based position < K]. AP is scikit-learn's
    `average_precision_score` on the junk-filtered ranking, as the re-production computes it:
    "trapezoid" = sklearn <= 0.18 (the re-production's reported numbers and the official
    Market-1501 Matlab code), "step" = sklearn >= 0.19 (= the usual torchreid AP when there are
    no exact score ties).

    Args:
      distance: [Q, G] float distances, lower = better.
      query_ids, gallery_ids: [Q], [G] int identities (gallery: 0 distractor, -1 junk).
      query_cams, gallery_cams: [Q], [G] int camera ids.
      ks: ranks K for R@K.
      ap_mode: "step" or "trapezoid".

    Returns:
      {'R1', 'R5', 'R10' (one f"R{k}" per k), 'mAP'}: Python floats in percent over the valid
      queries.
    """
    ks = _check_ks(ks)
    distance = np.asarray(distance, np.float32)
    query_ids = np.asarray(query_ids).reshape(-1)
    gallery_ids = np.asarray(gallery_ids).reshape(-1)
    query_cams = np.asarray(query_cams).reshape(-1)
    gallery_cams = np.asarray(gallery_cams).reshape(-1)
    if query_cams.shape != query_ids.shape or gallery_cams.shape != gallery_ids.shape:
        raise ValueError("camera arrays must match the id arrays in shape")
    junk = market_junk_mask(query_ids, gallery_ids, query_cams, gallery_cams)
    ranks = rank_positives(-distance, query_ids, gallery_ids, junk_mask=junk)
    valid = ranks.num_positives > 0
    if not valid.any():
        raise ValueError("no valid query: no query has a non-junk positive in the gallery")
    if not valid.all():
        logging.warning(
            "skipped %d of %d queries without a valid positive", (~valid).sum(), len(valid)
        )
    ap = average_precision(ranks, ap_mode=ap_mode, tie_groups=True)
    hits, _ = _cmc_and_inp(ranks, ks)
    out = {f"R{k}": 100.0 * float(np.mean(hits[k][valid])) for k in ks}
    out["mAP"] = 100.0 * float(np.mean(ap[valid]))
    return out
