"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) as the AlignedReID re-production runs it.

Computes the same [Q, G] distances as the reference loop (alignedreid §8.2) without any dense
N x N matrix (N = Q + G) and without a Python loop over rows:

1. O = row-normalised squared distances of the implicit matrix A = [[qq, qg], [qgᵀ, gg]].
   The reference divides A by its column maxima and transposes, so row i of O is column i of
   A: query rows read qq by columns and qg by rows, gallery rows read qg and gg by columns,
   which matches it bit for bit even when qq / gg are not exactly symmetric.
2. The K = k1 + 1 nearest entries of every row of O, exactly as the first K of a stable
   argsort: each row is cut into blocks of B ~ sqrt(N / K) entries (8..32; strided along rows
   of qg, contiguous down columns, so every reduction runs over a middle axis); the K blocks
   with the smallest minima contain the K smallest entries unless another block's minimum ties
   the K-th (those rare rows are ranked in full); the K * B candidates are ranked by uint64 keys
   (float bits << 32 | column), so exact ties go to the lower column. NumPy's default
   quicksort, used by the reference, leaves the order of exact ties unspecified.
3. k-reciprocal sets and the round(k1/2) expansion with the strict 2/3 overlap rule
   (thresholds evaluated in float64 like the reference) in JAX on the [N, K] neighbour table.
4. V sparse (exp(-O) on the expanded set, rows sum to 1), local query expansion over the k2
   nearest as a sparse product, the Jaccard term sum_t min(V_it, V_jt) by enumerating only
   the (query, column, gallery) triples where both are non-zero (the reference's inverted
   index), one bincount per chunk, then the final mix.

The passes over the GB-sized inputs are NumPy views and reductions, threaded over row chunks:
on CPU, XLA's reductions and the host-to-device copy of the inputs each measured several times
slower (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

_MIN_BLOCK, _MAX_BLOCK = 8, 32
_ROW_CHUNK = 2048
_PAIR_CHUNK = 1 << 23  # (query, column, gallery) triples / output entries per Jaccard chunk
_LOW32 = np.uint64(0xFFFFFFFF)


def _thread_map(fn: Callable, items: Sequence) -> list:
    """fn over items on up to 2 threads (NumPy releases the GIL in its array loops)."""
    workers = min(2, os.cpu_count() or 1, len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _chunks(num: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, num)) for s in range(0, num, size)]


class _Segment:
    """One contiguous column range of every row of O, read from a 2-D array by rows or columns.

    orientation "row": row r's segment is x[r, :], block t holds columns t + F * s (s < B,
    F = number of full blocks); "col": row r's segment is x[:, r], block t holds entries
    B t + s. The leftover entries form one last, NaN-padded block. B = `block`.
    """

    def __init__(self, x: np.ndarray, orientation: str, block: int):
        self.x = x
        self.block = block
        self.by_row = orientation == "row"
        self.length = x.shape[1] if self.by_row else x.shape[0]
        self.full = self.length // self.block
        self.num_blocks = -(-self.length // self.block)
        cut = self.full * self.block
        if self.by_row:
            self.view = x[:, :cut].reshape(x.shape[0], self.block, self.full)
            tail = x[:, cut:]
        else:
            self.view = x[:cut].reshape(self.full, self.block, x.shape[1])
            tail = x[cut:].T
        self.tail_length = tail.shape[1]
        self.tail = np.full((tail.shape[0], self.block), np.nan, np.float32)
        self.tail[:, : self.tail_length] = tail

    def stats(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """For rows `rows`: max |x| of the segment [R] and min |x| of every block [R, blocks]."""
        view = self.view[rows] if self.by_row else self.view[:, :, rows]
        tail = self.tail[rows, : self.tail_length]
        block_min, tail_min = view.min(axis=1), tail.min(axis=1, initial=np.inf)
        if min(block_min.min(initial=np.inf), tail_min.min(initial=np.inf)) < 0:
            view, tail = np.abs(view), np.abs(tail)  # only d^2 is used, so |d| decides
            block_min, tail_min = view.min(axis=1), tail.min(axis=1, initial=np.inf)
        block_max = view.max(axis=1)
        if not self.by_row:
            block_min, block_max = block_min.T, block_max.T
        row_max = np.maximum(block_max.max(axis=1, initial=-np.inf), tail.max(1, initial=-np.inf))
        if self.num_blocks > self.full:
            block_min = np.concatenate([block_min, tail_min[:, None]], axis=1)
        return row_max, block_min

    def gather(self, rows: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw values [M, B] (NaN padding) and segment offsets [M, B] of block blocks[m]."""
        step = np.arange(self.block)
        in_tail = blocks >= self.full
        safe = np.minimum(blocks, max(self.full - 1, 0))[:, None]
        offset = safe + self.full * step if self.by_row else safe * self.block + step
        offset = np.where(in_tail[:, None], self.full * self.block + step, offset)
        if self.full == 0:
            return self.tail[rows], offset
        values = self.view[rows, :, safe[:, 0]] if self.by_row else self.view[safe[:, 0], :, rows]
        if in_tail.any():
            values[in_tail] = self.tail[rows[in_tail]]
        return values, offset

    def whole_rows(self, rows: np.ndarray) -> np.ndarray:
        """[R, length] the full segment of each row."""
        return self.x[rows] if self.by_row else self.x[:, rows].T


def _squared_over_max(d: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """O = d^2 / (row max of d^2), in float32 exactly as the reference evaluates it."""
    return np.square(np.asarray(d, np.float32)) / row_max


def _first_k_exact(values: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k smallest (value, column) pairs of each row, in that order.

    Args:
      values: [R, C] non-negative float32 (inf marks padding).
      cols: [R, C] column index (< 2^32) of each value.
      k: how many to return (<= C).
    """
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32).astype(np.uint64)
    key = (bits << np.uint64(32)) | cols.astype(np.uint64)
    if k < key.shape[1]:
        key = np.partition(key, k - 1, axis=1)[:, :k]
    return (np.sort(key, axis=1) & _LOW32).astype(np.int64)


def _first_k(values: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """`_first_k_exact`, via a float32 partition; rows with a tie at the k-th value go exact."""
    if k >= values.shape[1]:
        return _first_k_exact(values, cols, k)
    part = np.argpartition(values, k - 1, axis=1)[:, :k]
    chosen = np.take_along_axis(values, part, axis=1)
    out = _first_k_exact(chosen, np.take_along_axis(cols, part, axis=1), k)
    tied = np.count_nonzero(values <= chosen.max(axis=1, keepdims=True), axis=1) > k
    if tied.any():
        out[tied] = _first_k_exact(values[tied], cols[tied], k)
    return out


def _nearest_chunk(segments, block_min, row_max, rows, k) -> np.ndarray:
    """[R, k] nearest columns for one chunk of rows (see module docstring, step 2)."""
    seg_a, seg_b = segments
    block_o = _squared_over_max(block_min, row_max[:, None])
    num_sel = min(k, block_o.shape[1])
    sel = np.argpartition(block_o, num_sel - 1, axis=1)[:, :num_sel]
    kth = np.max(np.take_along_axis(block_o, sel, axis=1), axis=1)
    # A block left out whose minimum equals the K-th could hold a tied entry that wins by
    # column index: rank those rows in full.
    tied = np.count_nonzero(block_o <= kth[:, None], axis=1) > num_sel
    in_a = (sel < seg_a.num_blocks).reshape(-1)
    row_of = np.repeat(rows, num_sel)
    sel = sel.reshape(-1)
    vals = np.empty((sel.size, seg_a.block), np.float32)
    cols = np.empty((sel.size, seg_a.block), np.int64)
    vals[in_a], cols[in_a] = seg_a.gather(row_of[in_a], sel[in_a])
    b_vals, b_cols = seg_b.gather(row_of[~in_a], sel[~in_a] - seg_a.num_blocks)
    vals[~in_a], cols[~in_a] = b_vals, b_cols + seg_a.length
    cand_o = _squared_over_max(vals, row_max[np.repeat(np.arange(len(rows)), num_sel), None])
    np.copyto(cand_o, np.inf, where=np.isnan(vals))  # padding of partial blocks
    out = _first_k(cand_o.reshape(len(rows), -1), cols.reshape(len(rows), -1), k)
    if tied.any():
        whole = np.concatenate([seg.whole_rows(rows[tied]) for seg in segments], axis=1)
        whole_o = _squared_over_max(whole, row_max[tied, None])
        out[tied] = _first_k_exact(
            whole_o, np.broadcast_to(np.arange(whole.shape[1]), whole.shape), k
        )
    return out


def _nearest(segments: tuple[_Segment, _Segment], num_rows: int, k: int):
    """Row maxima of d^2 [R] and the k nearest columns [R, k] of every row of these segments."""

    def stats(rows):
        (max_a, min_a), (max_b, min_b) = (seg.stats(rows) for seg in segments)
        return np.maximum(max_a, max_b), np.concatenate([min_a, min_b], axis=1)

    # Two halves (one per thread): reductions over long row ranges run fastest.
    halves = _thread_map(stats, _chunks(num_rows, -(-num_rows // 2)))
    row_max = np.square(np.concatenate([h[0] for h in halves]).astype(np.float32))
    if not np.all(np.isfinite(row_max)) or not np.all(row_max > 0):
        raise ValueError("distances must be finite, with a non-zero entry in every row")
    block_min = np.concatenate([h[1] for h in halves])

    def nearest(rows: slice) -> np.ndarray:
        idx = np.arange(rows.start, rows.stop)
        return _nearest_chunk(segments, block_min[rows], row_max[rows], idx, k)

    return row_max, np.concatenate(_thread_map(nearest, _chunks(num_rows, _ROW_CHUNK)))


@functools.partial(jax.jit, static_argnames=("half_k",))
def _expanded_sets(neighbours: jax.Array, min_overlap: jax.Array, *, half_k: int):
    """Members of each row's expanded k-reciprocal set (alignedreid §8.2 step 4a-d).

    Args:
      neighbours: [N, K] int32 nearest neighbours of each row (self usually first), K = k1 + 1.
      min_overlap: [half_k + 1] int32, smallest overlap accepted for a candidate set of size n.
      half_k: K' = round(k1 / 2) + 1 neighbours for the candidates' reciprocal sets.

    Returns:
      ([N, K + K * K'] int32 members, same-shape bool mask); members may repeat.
    """
    own = jnp.arange(neighbours.shape[0], dtype=neighbours.dtype)
    recip = jnp.any(neighbours[neighbours] == own[:, None, None], axis=-1)  # [N, K]
    short = neighbours[:, :half_k]
    recip_short = jnp.any(short[short] == own[:, None, None], axis=-1)  # [N, K']

    def one_row(row, row_recip):
        cand, cand_recip = short[row], recip_short[row]  # [K, K'] candidates' sets
        in_set = jnp.any((cand[..., None] == row) & row_recip, axis=-1)
        overlap = jnp.sum(in_set & cand_recip, axis=-1)
        accept = row_recip & (overlap >= min_overlap[jnp.sum(cand_recip, axis=-1)])
        members = jnp.concatenate([row, cand.reshape(-1)])
        mask = jnp.concatenate([row_recip, (accept[:, None] & cand_recip).reshape(-1)])
        return members, mask

    return jax.vmap(one_row)(neighbours, recip)


def _min_overlap_table(size: int) -> np.ndarray:
    """Smallest integer x with x > 2./3 * n (float64, as the reference), for n = 0..size."""
    return np.array([math.floor(2.0 / 3 * n) + 1 for n in range(size + 1)], np.int32)


def _padded_rows(num: int) -> int:
    """Row count the JAX step is compiled for (few distinct shapes across calls)."""
    return 1 << max(num - 1, 1).bit_length() if num <= 4096 else -(-num // 4096) * 4096


def _gather_distances(q_g, q_q, g_g, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A[cols, rows] (= row `rows` of O's source) for arbitrary index pairs."""
    num_q = q_q.shape[0]
    out = np.empty(rows.shape, np.float32)
    qr, qc = rows < num_q, cols < num_q
    for sel, src, r, c in (
        (qr & qc, q_q, cols, rows),
        (qr & ~qc, q_g, rows, cols - num_q),
        (~qr & qc, q_g, cols, rows - num_q),
        (~qr & ~qc, g_g, cols - num_q, rows - num_q),
    ):
        out[sel] = src[r[sel], c[sel]]
    return out


def _sparse_weights(dists, row_max, members, mask) -> scipy.sparse.csr_matrix:
    """V: exp(-O) over each row's unique expanded set, normalised to sum 1 (float32)."""
    num = row_max.shape[0]
    members = np.sort(np.where(mask, members, num), axis=1)
    keep = members < num
    keep[:, 1:] &= members[:, 1:] != members[:, :-1]
    rows = np.broadcast_to(np.arange(num)[:, None], members.shape)[keep]
    cols = members[keep]
    weight = np.exp(-_squared_over_max(_gather_distances(*dists, rows, cols), row_max[rows]))
    total = np.bincount(rows, weights=weight, minlength=num).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(keep, axis=1))])
    return scipy.sparse.csr_matrix((weight / total[rows], cols, indptr), shape=(num, num))


def _jaccard_min_sums(query_rows, gallery_cols) -> tuple[np.ndarray, np.ndarray]:
    """m_ij = sum_t min(V_it, V_jt) for query rows i and gallery rows j, where non-zero.

    Args:
      query_rows: [R, N] CSR rows of V for a chunk of queries.
      gallery_cols: [G, N] gallery rows of V in CSC (column t -> gallery rows).

    Returns:
      (flat indices i * G + j of the pairs sharing a column, their float32 m_ij).
    """
    qry = query_rows.tocoo()
    num_g = gallery_cols.shape[0]
    counts = np.diff(gallery_cols.indptr)[qry.col]
    out = np.zeros(query_rows.shape[0] * num_g, np.float64)
    touched = np.zeros(out.size, bool)  # every contribution is > 0
    cuts = np.searchsorted(np.cumsum(counts), np.arange(_PAIR_CHUNK, counts.sum(), _PAIR_CHUNK))
    for entries in np.split(np.arange(len(counts)), cuts):
        cnt = counts[entries]
        entry = np.repeat(entries, cnt)
        first = np.cumsum(cnt) - cnt
        pos = np.repeat(gallery_cols.indptr[qry.col[entries]] - first, cnt) + np.arange(cnt.sum())
        contrib = np.minimum(qry.data[entry], gallery_cols.data[pos])
        flat = qry.row[entry].astype(np.int64) * num_g + gallery_cols.indices[pos]
        out += np.bincount(flat, weights=contrib, minlength=out.size)
        touched[flat] = True
    hit = np.flatnonzero(touched)
    return hit, out[hit].astype(np.float32)


def k_reciprocal_rerank(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranked query-gallery distances (alignedreid §8).

    Equals the re-production's loop implementation up to float32 rounding (max abs diff
    ~1e-6): squared inputs divided by the column maxima of the assembled matrix (then
    transposed), k1 + 1 forward neighbours including self, the round(k1 / 2) + 1 expansion
    accepted when the overlap is > 2/3 of the candidate's set, exp(-O) weights, query expansion
    over the k2 nearest (skipped when k2 == 1), the Jaccard distance 1 - m / (2 - m) with
    m = sum_t min(V_it, V_jt), and (1 - lambda) * jaccard + lambda * O. Neighbour counts are
    clipped to N like NumPy slices. Exactly tied distances are ordered by index (the
    reference's unstable argsort leaves them unspecified). Inputs are cast to float32 first.

    Args:
      q_g_dist: [Q, G] plain (not squared) distances, lower = closer.
      q_q_dist: [Q, Q] query-query distances of the same kind.
      g_g_dist: [G, G] gallery-gallery distances of the same kind.
      k1: forward neighbours for the k-reciprocal sets.
      k2: neighbours for local query expansion.
      lambda_value: weight of the original distance in the final mix.

    Returns:
      [Q, G] float32 NumPy re-ranked distances, lower = closer.
    """
    q_g = np.asarray(q_g_dist, np.float32)
    q_q = np.asarray(q_q_dist, np.float32)
    g_g = np.asarray(g_g_dist, np.float32)
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"shapes {q_g.shape}, {q_q.shape}, {g_g.shape} are not [Q,G],[Q,Q],[G,G]")
    if min(k1, k2) < 1 or min(num_q, num_g) < 1:
        raise ValueError(f"need k1, k2 >= 1 and non-empty inputs, got k1={k1}, k2={k2}")
    num = num_q + num_g
    k = min(k1 + 1, num)
    k_rank = min(max(k1 + 1, k2), num)  # query expansion may look further than k1 + 1
    # Block size ~ sqrt(N / k) balances the block minima and the candidates ranked per row.
    block = int(np.clip(round(math.sqrt(num / k_rank)), _MIN_BLOCK, _MAX_BLOCK))
    segs_q = (_Segment(q_q, "col", block), _Segment(q_g, "row", block))
    max_q, near_q = _nearest(segs_q, num_q, k_rank)
    segs_g = (_Segment(q_g, "col", block), _Segment(g_g, "col", block))
    max_g, near_g = _nearest(segs_g, num_g, k_rank)
    row_max, neighbours = np.concatenate([max_q, max_g]), np.concatenate([near_q, near_g])

    half_k = min(int(np.around(k1 / 2.0)) + 1, num)
    fill = np.repeat(np.arange(num, _padded_rows(num))[:, None], k, axis=1)
    members, mask = _expanded_sets(
        jnp.asarray(np.concatenate([neighbours[:, :k], fill]), jnp.int32),
        jnp.asarray(_min_overlap_table(half_k)),
        half_k=half_k,
    )
    v = _sparse_weights((q_g, q_q, g_g), row_max, np.asarray(members)[:num], np.asarray(mask)[:num])
    if k2 != 1:
        k2 = min(k2, num)
        expand = scipy.sparse.csr_matrix(
            (np.ones(num * k2), neighbours[:, :k2].reshape(-1), np.arange(0, num * k2 + 1, k2)),
            shape=(num, num),
        )
        v = ((expand @ v.astype(np.float64)) / k2).astype(np.float32).tocsr()
    gallery_cols = v[num_q:].tocsc()
    out = np.empty((num_q, num_g), np.float32)
    keep, mix = np.float32(1 - lambda_value), np.float32(lambda_value)

    def final(rows: slice) -> None:
        # final = jaccard * (1 - lambda) + O * lambda; jaccard is exactly 1 where m = 0, so the
        # dense part is O * lambda + (1 - lambda) and only m > 0 entries are recomputed.
        part = out[rows]
        np.square(q_g[rows], out=part)
        part /= row_max[rows, None]
        part *= mix
        hit, m = _jaccard_min_sums(v[rows], gallery_cols)
        scaled = part.reshape(-1)[hit]
        part += keep
        part.reshape(-1)[hit] = (1 - m / (2.0 - m)) * keep + scaled

    _thread_map(final, _chunks(num_q, max(1, _PAIR_CHUNK // num_g)))
    return out
