"""Approximate nearest neighbours for large galleries: a faiss inverted-file index (IVF-Flat).

Optional (`pip install 'reid_jax[ann]'`, the `faiss-cpu` package). The gallery's unit
embeddings are split into `nlist` k-means cells; a query scans only the `nprobe` cells whose
centroids are closest, so it reads about nprobe / nlist of the gallery. Scores are the same
inner products as exact search; only candidates can be missed, and `recall_at_k` measures how
many (benchmarks/search.py records it against exact search).

Stored as faiss's own binary serialisation (`faiss.serialize_index`): a data format, nothing
in it is executed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

KIND = "ivf_flat"
INSTALL_HINT = "pip install 'reid_jax[ann]' (the faiss-cpu package)"


class ApproximateIndexError(RuntimeError):
    """faiss is missing, or an approximate index file cannot be read."""


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ApproximateIndexError(f"approximate search needs faiss: {INSTALL_HINT}") from error
    return faiss


def default_nlist(count: int) -> int:
    """Cells for `count` vectors: about sqrt(count), and at least 39 training vectors per
    cell (faiss's k-means minimum)."""
    return max(1, min(round(math.sqrt(count)), count // 39))


def default_nprobe(nlist: int) -> int:
    """Cells scanned per query: 1/8 of them, at least 8 (or all when fewer)."""
    return min(nlist, max(8, nlist // 8))


def build(embeddings: np.ndarray, *, nlist: int | None = None, seed: int = 0):
    """An IVF-Flat inner-product index over `embeddings` float32 [N, d] (ids = row numbers).

    Returns:
      the trained, filled faiss index.
    """
    faiss = _faiss()
    vectors = np.ascontiguousarray(embeddings, np.float32)
    count, dim = vectors.shape
    nlist = default_nlist(count) if nlist is None else int(nlist)
    if not 1 <= nlist <= max(1, count):
        raise ValueError(f"nlist must be in [1, {count}] for {count} embeddings, got {nlist}")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(vectors)
    index.add(vectors)
    index.nprobe = default_nprobe(nlist)
    return index


def to_bytes(index) -> bytes:
    """faiss's serialisation of an index."""
    return _faiss().serialize_index(index).tobytes()


def load(path: str | Path, *, nprobe: int):
    """Reads an index written from `to_bytes`; `nprobe` cells are scanned per query."""
    faiss = _faiss()
    try:
        index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as error:
        raise ApproximateIndexError(f"{path}: not a faiss index ({error})") from error
    index.nprobe = int(nprobe)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each query.

    Args:
      index: from `build` or `load`.
      queries: float32 [Q, d] unit rows.
      k: results per query (clipped to the index size).

    Returns:
      (scores float32 [Q, k'] inner products, best first; rows int64 [Q, k']), k' = min(k, N);
      a row the scanned cells could not fill is -1 with score -inf.
    """
    k = min(int(k), index.ntotal)
    scores, rows = index.search(np.ascontiguousarray(queries, np.float32), k)
    return scores.astype(np.float32), rows


def recall_at_k(approximate_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k.

    Args:
      approximate_rows, exact_rows: int [Q, k] row numbers.
    """
    pairs = zip(approximate_rows, exact_rows, strict=True)
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in pairs]))
