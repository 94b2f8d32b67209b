"""Where a task's dataset lives: the configured folder, or the embedded dataset's cache copy.

Every task reads `config.data` the same way: a real dataset is `data.root`; the embedded
dataset (`data.dataset == 'embedded'`) is generated on first use into
`<$REID_JAX_DATA or ~/.cache/reid_jax>/<name>`, where the name is keyed by the generator
options, so runs with different options (a smoke-sized copy, another seed) never replace
each other's data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

EMBEDDED = "embedded"
_DEFAULT_OPTIONS = {"seed": 0, "image_size": [128, 64]}
Record = TypeVar("Record")


def embedded_options(data_config: Any) -> dict[str, Any]:
    """The generator options a config asks for (seed, image size, size overrides)."""
    return {
        "seed": int(data_config.embedded_seed),
        "image_size": [int(v) for v in data_config.embedded_image_size],
        **{k: v for k, v in data_config.embedded_sizes.items()},
    }


def embedded_folder_name(data_config: Any) -> str:
    """'embedded' for the default generator options (shared by every task's default config),
    'embedded-<hash of the options>' otherwise."""
    options = embedded_options(data_config)
    if options == _DEFAULT_OPTIONS:
        return EMBEDDED
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return f"{EMBEDDED}-{digest}"


def embedded_cache_dir() -> Path:
    """`$REID_JAX_DATA`, or ~/.cache/reid_jax when unset."""
    return Path(os.environ.get("REID_JAX_DATA") or os.path.expanduser("~/.cache/reid_jax"))


def dataset_root(data_config: Any, embedded_part: str) -> Path:
    """Folder handed to the dataset parser.

    Args:
      data_config: `config.data` (dataset, root and, for 'embedded', the generator options).
      embedded_part: the embedded dataset's sub-folder in the format the task reads, e.g.
        'CUHK-PEDES' or 'Market-1501'.

    Returns:
      `data.root` for a real dataset; for 'embedded', the part of the (generated on first use)
      embedded copy (`data.root` when set, else the keyed cache folder).
    """
    if data_config.dataset != EMBEDDED:
        return Path(data_config.root)
    from reid_jax.data.synthetic import ensure_dataset  # lazy: generation code is large

    options = embedded_options(data_config)
    root = data_config.root or embedded_cache_dir() / embedded_folder_name(data_config)
    path = ensure_dataset(
        root,
        seed=options.pop("seed"),
        image_size=tuple(options.pop("image_size")),
        **options,
    )
    return Path(path) / embedded_part


def cached_loader(
    load: Callable[[str, str], list[Record]],
) -> Callable[[str, str], tuple[Record, ...]]:
    """Wraps `load(dataset, root) -> records` so each (dataset, root) is parsed once per
    process (training and every evaluation share the parse)."""

    @functools.lru_cache(maxsize=4)
    def cached(dataset: str, root: str) -> tuple[Record, ...]:
        return tuple(load(dataset, root))

    return cached


def split_records(
    data_config: Any,
    split: str,
    *,
    embedded_part: str,
    load: Callable[[str, str], tuple[Record, ...]],
) -> list[Record]:
    """Records of one split of the configured dataset.

    Args:
      data_config: `config.data`.
      split: e.g. 'train', 'test', 'query', 'gallery' (matched against `record.split`).
      embedded_part: see `dataset_root`.
      load: (dataset, root) -> all records, usually a `cached_loader`.

    Returns:
      The records whose `split` equals `split`, in file order.
    """
    records = load(data_config.dataset, str(dataset_root(data_config, embedded_part)))
    return [r for r in records if r.split == split]
