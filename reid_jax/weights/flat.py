"""Flat '/'-joined views of flax variables, and the converted-weights file (.npz).

A converted weights file is an `.npz` whose keys are collection-prefixed parameter paths,
e.g. 'params/backbone/conv1/kernel' or 'batch_stats/backbone/bn1/mean', one float array each,
plus an optional '__metadata__' entry holding a JSON string (source file, epoch, scores).
`config.init_from` and `reid-jax import-weights` read and write this format.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

METADATA_KEY = "__metadata__"


def flatten_variables(variables: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {'a/b/c': array} (arrays fetched to host as NumPy).

    Args:
      variables: e.g. {'params': {...}, 'batch_stats': {...}} (jax or numpy leaves).
      prefix: prepended to every key (used in recursion).

    Returns:
      Flat mapping in depth-first key order.
    """
    flat: dict[str, np.ndarray] = {}
    for key, value in variables.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_variables(value, f"{name}/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def flatten_shapes(variables: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Like `flatten_variables`, but only the shapes (works on `jax.eval_shape` output)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, value in variables.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            shapes.update(flatten_shapes(value, f"{name}/"))
        else:
            shapes[name] = tuple(value.shape)
    return shapes


def unflatten_variables(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a/b/c': array} -> nested dicts (the inverse of `flatten_variables`).

    Raises:
      ValueError: a key is both a leaf and a prefix of another key.
    """
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"weights: '{name}' extends the leaf '{part}'")
        if leaf in node:
            raise ValueError(f"weights: '{name}' is both a leaf and a folder")
        node[leaf] = value
    return nested


def save_weights_npz(
    path: str | os.PathLike, variables: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> Path:
    """Writes variables as a converted weights file, atomically (temporary name + rename).

    Args:
      path: destination; '.npz' is appended when missing.
      variables: nested variables ({'params': ..., 'batch_stats': ...}).
      metadata: JSON-serialisable facts about the source (stored under '__metadata__').

    Returns:
      The path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = flatten_variables(variables)
    if metadata:
        arrays[METADATA_KEY] = np.asarray(json.dumps(dict(metadata), sort_keys=True))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads a converted weights file without unpickling anything.

    Returns:
      (flat arrays keyed 'params/...' / 'batch_stats/...', metadata dict).

    Raises:
      ValueError: the file is not a readable npz (message names the file).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz weights file ({error})") from None
    metadata = json.loads(str(flat.pop(METADATA_KEY))) if METADATA_KEY in flat else {}
    return flat, metadata
