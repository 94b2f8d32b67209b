"""Where a task's dataset lives: the configured folder, or the embedded dataset's cache copy.

Every task reads `config.data` the same way: a real dataset is `data.root`; the embedded
dataset (`data.dataset == 'embedded'`) is generated on first use into
`<$REID_JAX_DATA or ~/.cache/reid_jax>/<name>`, where the name is keyed by the generator
options, so runs with different options (a smoke-sized copy, another seed) never replace
each other's data.

With `data.tfds_dir` set, records come from the dataset prepared there as ArrayRecord
(`reid-jax prepare`; `reid_jax.data.builders.registry`) instead of the parsed folder: the same
records in the same order, whose image paths are locations in the ArrayRecord files. The
embedded dataset is prepared on first use into `<tfds_dir>/<embedded name>/`.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
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


def prepared_records(data_config: Any, builder_name: str, embedded_part: str) -> tuple:
    """Every record of the configured dataset, read from its prepared copy in `data.tfds_dir`.

    Args:
      data_config: `config.data` with a non-empty `tfds_dir`.
      builder_name: the TFDS builder of the dataset's format, e.g. 'cuhk_pedes'.
      embedded_part: see `dataset_root`; for 'embedded', the folder the builder prepares from
        (on first use, under a lock so that several processes prepare it once).

    Returns:
      the parser's records in file order, image paths replaced by image locations.

    Raises:
      FileNotFoundError: a real dataset that is not prepared (the message gives the command).
    """
    from reid_jax.data.builders import registry  # lazy: imports TFDS

    data_dir = Path(data_config.tfds_dir).absolute()
    if data_config.dataset == EMBEDDED:
        data_dir = data_dir / embedded_folder_name(data_config)
        if not registry.is_prepared(builder_name, data_dir):
            manual_dir = dataset_root(data_config, embedded_part)
            data_dir.mkdir(parents=True, exist_ok=True)
            with open(data_dir / f".{builder_name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                registry.prepare_dataset(builder_name, manual_dir=manual_dir, data_dir=data_dir)
    return registry.load_prepared_records(builder_name, data_dir)


def split_records(
    data_config: Any,
    split: str,
    *,
    embedded_part: str,
    load: Callable[[str, str], tuple[Record, ...]],
    builders: Mapping[str, str] | None = None,
) -> list[Record]:
    """Records of one split of the configured dataset.

    Args:
      data_config: `config.data`.
      split: e.g. 'train', 'test', 'query', 'gallery' (matched against `record.split`).
      embedded_part: see `dataset_root`.
      load: (dataset, root) -> all records, usually a `cached_loader`.
      builders: `data.dataset` -> TFDS builder name, for the datasets this task can read
        prepared (`data.tfds_dir`); None: none.

    Returns:
      The records whose `split` equals `split`, in file order.

    Raises:
      ValueError: `data.tfds_dir` is set for a dataset without a builder.
    """
    if data_config.tfds_dir:
        builders = builders or {}
        if data_config.dataset not in builders:
            raise ValueError(
                f"config.data.tfds_dir: dataset '{data_config.dataset}' cannot be read from a "
                f"prepared dataset here; these can: {sorted(builders)} (or set tfds_dir='')"
            )
        records = prepared_records(data_config, builders[data_config.dataset], embedded_part)
    else:
        records = load(data_config.dataset, str(dataset_root(data_config, embedded_part)))
    return [r for r in records if r.split == split]
