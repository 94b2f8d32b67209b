"""Saved evaluation features: one .npz file that `reid-jax evaluate --features` reads.

Layout (NumPy .npz, no pickled objects; strings are unicode arrays):

  format_version      int scalar, currently 1
  query_features      [Q, D] or [Q, K, D] float features (single level), or, for several
  gallery_features    levels: `levels` (string array of names) and, per name,
                      query_features_<name> / gallery_features_<name>
  query_ids           [Q] int identities
  gallery_ids         [G] int identities (camera protocol: 0 distractor, -1 junk)
  query_cams          [Q] int, optional; with gallery_cams selects the Market-1501 protocol
  gallery_cams        [G] int, optional
  query_texts         [Q] str, optional (caption queries, shown in rank lists)
  query_paths         [Q] str, optional (image queries)
  gallery_paths       [G] str, optional (rank lists are drawn only with these)
  similarity_kind     str scalar: "cosine" (default; SSAN/APTM, higher = better) or
                      "euclidean" (AlignedReID; [*, K, D] levels use the aligned local distance)
  similarity          [Q, G] float, optional precomputed scores, higher = better (e.g. APTM's
                      assembled ITM scores), evaluated as the variant "precomputed"

Level names are [A-Za-z0-9_]+. `save_features` validates and writes atomically (temporary
name, then rename); `load_features` raises DatasetFormatError naming the file and field.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from reid_jax.data.errors import DatasetFormatError

FORMAT_VERSION = 1
SIMILARITY_KINDS = ("cosine", "euclidean")
SINGLE_LEVEL = "features"
_LEVEL_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass(frozen=True)
class Features:
    """Contents of a features file (see the module docstring for the meaning of each field).

    Attributes:
      query_features: level name -> [Q, D] or [Q, K, D] float32 ("features" if single level).
      gallery_features: level name -> [G, D] or [G, K, D] float32, same levels.
      query_ids: [Q] int64.
      gallery_ids: [G] int64.
      query_cams: [Q] int64 or None.
      gallery_cams: [G] int64 or None.
      query_texts: Q strings or None.
      query_paths: Q strings or None.
      gallery_paths: G strings or None.
      similarity_kind: "cosine" or "euclidean".
      similarity: [Q, G] float32 precomputed scores or None.
    """

    query_features: dict[str, np.ndarray]
    gallery_features: dict[str, np.ndarray]
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    query_cams: np.ndarray | None = None
    gallery_cams: np.ndarray | None = None
    query_texts: tuple[str, ...] | None = None
    query_paths: tuple[str, ...] | None = None
    gallery_paths: tuple[str, ...] | None = None
    similarity_kind: str = "cosine"
    similarity: np.ndarray | None = None

    @property
    def has_cameras(self) -> bool:
        return self.query_cams is not None and self.gallery_cams is not None


def _fail(path: str, field: str, message: str) -> DatasetFormatError:
    return DatasetFormatError(path, message, field=field)


def _validate(path: str, f: Features) -> None:
    """Raises DatasetFormatError if shapes / kinds are inconsistent."""
    for name, arr in (("query_ids", f.query_ids), ("gallery_ids", f.gallery_ids)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise _fail(path, name, f"must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    num_q, num_g = len(f.query_ids), len(f.gallery_ids)
    if f.similarity_kind not in SIMILARITY_KINDS:
        raise _fail(path, "similarity_kind", f"must be one of {SIMILARITY_KINDS}")
    if set(f.query_features) != set(f.gallery_features):
        raise _fail(path, "levels", "query and gallery features have different levels")
    if not f.query_features and f.similarity is None:
        raise _fail(path, "query_features", "missing (no features and no similarity)")
    for level, q in f.query_features.items():
        g = f.gallery_features[level]
        suffix = "" if level == SINGLE_LEVEL else f"_{level}"
        for side, arr, n in (("query", q, num_q), ("gallery", g, num_g)):
            if arr.ndim not in (2, 3) or arr.shape[0] != n:
                raise _fail(
                    path,
                    f"{side}_features{suffix}",
                    f"shape {arr.shape}, expected [{n}, D] or [{n}, K, D]",
                )
        if q.shape[1:] != g.shape[1:]:
            raise _fail(
                path, f"gallery_features{suffix}", f"shape {g.shape} does not match query {q.shape}"
            )
    optional = (
        ("query_cams", f.query_cams, num_q),
        ("gallery_cams", f.gallery_cams, num_g),
        ("query_texts", f.query_texts, num_q),
        ("query_paths", f.query_paths, num_q),
        ("gallery_paths", f.gallery_paths, num_g),
    )
    for name, value, n in optional:
        if value is not None and len(value) != n:
            raise _fail(path, name, f"has {len(value)} entries, expected {n}")
    if (f.query_cams is None) != (f.gallery_cams is None):
        raise _fail(path, "query_cams", "query_cams and gallery_cams must come together")
    if f.similarity is not None and f.similarity.shape != (num_q, num_g):
        raise _fail(path, "similarity", f"shape {f.similarity.shape}, expected ({num_q}, {num_g})")


def _as_levels(value) -> dict[str, np.ndarray]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): np.asarray(v, np.float32) for k, v in value.items()}
    return {SINGLE_LEVEL: np.asarray(value, np.float32)}


def save_features(
    path: str,
    *,
    query_features: np.ndarray | Mapping[str, np.ndarray] | None,
    gallery_features: np.ndarray | Mapping[str, np.ndarray] | None,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray | None = None,
    gallery_cams: np.ndarray | None = None,
    query_texts: Sequence[str] | None = None,
    query_paths: Sequence[str] | None = None,
    gallery_paths: Sequence[str] | None = None,
    similarity_kind: str = "cosine",
    similarity: np.ndarray | None = None,
) -> None:
    """Validates and writes a features file atomically (layout in the module docstring).

    Args:
      path: output .npz path.
      query_features: [Q, D] / [Q, K, D] array, or {level name: array} for several levels.
      gallery_features: the gallery counterpart, same levels.
      query_ids, gallery_ids: [Q], [G] int identities.
      query_cams, gallery_cams: optional [Q], [G] int camera ids.
      query_texts, query_paths, gallery_paths: optional strings for rank lists.
      similarity_kind: "cosine" or "euclidean".
      similarity: optional [Q, G] precomputed scores (higher = better).
    """
    opt = lambda x, dtype: None if x is None else np.asarray(x, dtype)  # noqa: E731
    strs = lambda x: None if x is None else tuple(str(s) for s in x)  # noqa: E731
    features = Features(
        query_features=_as_levels(query_features),
        gallery_features=_as_levels(gallery_features),
        query_ids=np.asarray(query_ids),
        gallery_ids=np.asarray(gallery_ids),
        query_cams=opt(query_cams, None),
        gallery_cams=opt(gallery_cams, None),
        query_texts=strs(query_texts),
        query_paths=strs(query_paths),
        gallery_paths=strs(gallery_paths),
        similarity_kind=similarity_kind,
        similarity=opt(similarity, np.float32),
    )
    for level in features.query_features:
        if not _LEVEL_NAME.match(level):
            raise _fail(path, "levels", f"level name {level!r} is not [A-Za-z0-9_]+")
    _validate(path, features)
    for name in ("query_cams", "gallery_cams"):
        value = getattr(features, name)
        if value is not None and not np.issubdtype(value.dtype, np.integer):
            raise _fail(path, name, f"must be integers, got {value.dtype}")
    arrays = {
        "format_version": np.asarray(FORMAT_VERSION),
        "query_ids": features.query_ids,
        "gallery_ids": features.gallery_ids,
        "similarity_kind": np.asarray(similarity_kind),
    }
    levels = list(features.query_features)
    if levels == [SINGLE_LEVEL]:
        arrays["query_features"] = features.query_features[SINGLE_LEVEL]
        arrays["gallery_features"] = features.gallery_features[SINGLE_LEVEL]
    elif levels:
        arrays["levels"] = np.asarray(levels)
        for level in levels:
            arrays[f"query_features_{level}"] = features.query_features[level]
            arrays[f"gallery_features_{level}"] = features.gallery_features[level]
    for name in ("query_cams", "gallery_cams", "similarity"):
        if getattr(features, name) is not None:
            arrays[name] = getattr(features, name)
    for name in ("query_texts", "query_paths", "gallery_paths"):
        if getattr(features, name) is not None:
            arrays[name] = np.asarray(getattr(features, name), dtype=np.str_)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def load_features(path: str) -> Features:
    """Reads and validates a features file.

    Args:
      path: .npz written by `save_features` (or by hand in the same layout).

    Returns:
      Features.

    Raises:
      DatasetFormatError: naming the file and the missing or mis-shaped field.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetFormatError(path, f"cannot read as .npz: {e}") from e
    with data:
        keys = set(data.files)

        def get(name, required=False):
            if name not in keys:
                if required:
                    raise _fail(path, name, "missing")
                return None
            try:
                return data[name]
            except ValueError as e:  # object arrays need pickle
                raise _fail(path, name, f"unreadable ({e})") from e

        version = get("format_version")
        if version is not None and int(version) > FORMAT_VERSION:
            raise _fail(path, "format_version", f"{int(version)} is newer than {FORMAT_VERSION}")
        if "levels" in keys:
            levels = [str(s) for s in get("levels")]
            query = {lv: get(f"query_features_{lv}", True) for lv in levels}
            gallery = {lv: get(f"gallery_features_{lv}", True) for lv in levels}
        elif "query_features" in keys or "similarity" not in keys:
            query = {SINGLE_LEVEL: get("query_features", True)}
            gallery = {SINGLE_LEVEL: get("gallery_features", True)}
        else:
            query, gallery = {}, {}
        strs = lambda x: None if x is None else tuple(str(s) for s in x)  # noqa: E731
        ints = lambda x: None if x is None else np.asarray(x)  # noqa: E731
        kind = get("similarity_kind")
        features = Features(
            query_features={k: np.asarray(v, np.float32) for k, v in query.items()},
            gallery_features={k: np.asarray(v, np.float32) for k, v in gallery.items()},
            query_ids=np.asarray(get("query_ids", True)),
            gallery_ids=np.asarray(get("gallery_ids", True)),
            query_cams=ints(get("query_cams")),
            gallery_cams=ints(get("gallery_cams")),
            query_texts=strs(get("query_texts")),
            query_paths=strs(get("query_paths")),
            gallery_paths=strs(get("gallery_paths")),
            similarity_kind="cosine" if kind is None else str(kind),
            similarity=None if get("similarity") is None else get("similarity").astype(np.float32),
        )
    _validate(path, features)
    for name in ("query_cams", "gallery_cams"):
        value = getattr(features, name)
        if value is not None and not np.issubdtype(value.dtype, np.integer):
            raise _fail(path, name, f"must be integers, got {value.dtype}")
    as_int64 = lambda x: None if x is None else x.astype(np.int64)  # noqa: E731
    return dataclasses.replace(
        features,
        query_ids=as_int64(features.query_ids),
        gallery_ids=as_int64(features.gallery_ids),
        query_cams=as_int64(features.query_cams),
        gallery_cams=as_int64(features.gallery_cams),
    )
