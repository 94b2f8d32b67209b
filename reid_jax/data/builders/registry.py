"""Explicit table of the TFDS builders, plus prepare/read helpers (no TensorFlow needed).

Importing this module registers every builder with TFDS, so `tfds.data_source(name, ...)`
and `tfds.builder(name, ...)` find them by name.

A *prepared* dataset is the builder's ArrayRecord files plus its records file
(`records_file`), written by `prepare_dataset` (`reid-jax prepare`). Training reads it with
`load_prepared_records`: the parser's records, in file order, whose image paths are image
locations into the ArrayRecord files (`reid_jax.data.image_locations`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from reid_jax.data import image_locations
from reid_jax.data.builders import records_file
from reid_jax.data.builders.cuhk_pedes import CuhkPedes
from reid_jax.data.builders.icfg_pedes import IcfgPedes
from reid_jax.data.builders.mals import Mals
from reid_jax.data.builders.market1501 import Market1501
from reid_jax.data.builders.rstpreid import Rstpreid

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "cuhk_pedes": CuhkPedes,
    "icfg_pedes": IcfgPedes,
    "rstpreid": Rstpreid,
    "market1501": Market1501,
    "mals": Mals,
}

FILE_FORMAT = "array_record"


def _builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
    if name not in BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name]


def records_file_path(name: str, data_dir: str | os.PathLike) -> Path:
    """`<data_dir>/<name>/<version>/reid_jax_records.json` of the builder's current version."""
    version = str(_builder_class(name).VERSION)
    return Path(os.path.abspath(os.fspath(data_dir))) / name / version / records_file.RECORDS_FILE


def is_prepared(name: str, data_dir: str | os.PathLike) -> bool:
    """Whether `prepare_dataset(name, data_dir=data_dir)` has completed (its records file is
    written last)."""
    return records_file_path(name, data_dir).exists()


def prepare_dataset(
    name: str, *, manual_dir: str | os.PathLike, data_dir: str | os.PathLike
) -> tfds.core.DatasetBuilder:
    """Builds `name` from the real files in `manual_dir` into ArrayRecord files under `data_dir`,
    then writes its records file.

    Reuses an already prepared dataset. TFDS writes into an `incomplete.*` folder and renames it
    when done, and the records file is written last, so a failed build leaves no dataset that
    `load_prepared_records` would read.

    Args:
      name: a key of `BUILDERS`.
      manual_dir: the dataset root the parser reads (e.g. the folder holding `reid_raw.json`).
      data_dir: TFDS data directory; output goes to `data_dir/<name>/<version>/`.

    Returns:
      the prepared builder (`builder.as_data_source()` reads it).

    Raises:
      KeyError: unknown `name`.
      DatasetFormatError: the real files do not match their format.
    """
    builder = _builder_class(name)(data_dir=os.fspath(data_dir), file_format=FILE_FORMAT)
    if is_prepared(name, data_dir):
        return builder
    manual_dir = os.path.abspath(os.fspath(manual_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    # Parsed during the build; parsed here when the ArrayRecord files were already there.
    records = builder.parsed_records
    if records is None:
        records = builder.load_records(manual_dir)
    positions = builder.image_positions(records)
    counts: dict[str, int] = {}
    for split, position in positions:
        counts[split] = max(counts.get(split, 0), position + 1)
    stored = {split: info.num_examples for split, info in builder.info.splits.items()}
    if counts != stored:
        raise ValueError(
            f"{builder.data_dir}: the stored splits {stored} do not match the {len(records)} "
            f"records of {manual_dir} ({counts}); delete the folder and prepare again"
        )
    records_file.write_records_file(
        records_file_path(name, data_dir), records, positions, manual_dir=manual_dir
    )
    return builder


def load_prepared_records(name: str, data_dir: str | os.PathLike) -> tuple[Any, ...]:
    """Every record of a prepared dataset in the parser's (file) order, cached per process.

    The records equal the parser's on the manual dir, except that `image_path` is the image's
    location in the ArrayRecord files (`image_locations.make_location`).

    Args:
      name: a key of `BUILDERS`.
      data_dir: the TFDS data directory given to `prepare_dataset`.

    Returns:
      the records (`CaptionedImage`, `CameraImage` or `CaptionPair`).

    Raises:
      FileNotFoundError: the dataset is not prepared there (the message gives the command).
    """
    return _load_prepared_records(name, os.path.abspath(os.fspath(data_dir)))


@functools.lru_cache(maxsize=8)
def _load_prepared_records(name: str, data_dir: str) -> tuple[Any, ...]:
    path = records_file_path(name, data_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path.parent}: no prepared {name} dataset (its {records_file.RECORDS_FILE} is "
            f"missing); run: reid-jax prepare --dataset {name} --root DATASET_FOLDER "
            f"--tfds-dir {data_dir}"
        )
    records, positions = records_file.read_records_file(path)
    return tuple(
        dataclasses_replace(r, image_path=image_locations.make_location(name, split, p, data_dir))
        for r, (split, p) in zip(records, positions, strict=True)
    )


def load_data_source(
    name: str, *, data_dir: str | os.PathLike, split: str, decode_images: bool = True
):
    """Opens one split of a prepared dataset as a random-access source of NumPy examples.

    Args:
      name: a key of `BUILDERS`.
      data_dir: the TFDS data directory given to `prepare_dataset`.
      split: split name ('train', 'test', ...) or a TFDS split expression ('train[:10%]').
      decode_images: decode `image` to uint8 [H, W, 3]; False leaves the encoded bytes (for
        host pipelines that decode and resize themselves with PIL).

    Returns:
      a `Sequence`-like source: `len(source)`, `source[i]` -> dict of NumPy values / bytes.
    """
    _builder_class(name)
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return tfds.data_source(
        name, split=split, data_dir=os.fspath(data_dir), download=False, decoders=decoders
    )
