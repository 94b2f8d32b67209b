"""Explicit table of the TFDS builders, plus prepare/read helpers (no TensorFlow needed).

Importing this module registers every builder with TFDS, so `tfds.data_source(name, ...)`
and `tfds.builder(name, ...)` find them by name.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from reid_jax.data.builders.cuhk_pedes import CuhkPedes
from reid_jax.data.builders.icfg_pedes import IcfgPedes
from reid_jax.data.builders.market1501 import Market1501
from reid_jax.data.builders.rstpreid import Rstpreid

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "cuhk_pedes": CuhkPedes,
    "icfg_pedes": IcfgPedes,
    "rstpreid": Rstpreid,
    "market1501": Market1501,
}

FILE_FORMAT = "array_record"


def prepare_dataset(
    name: str, *, manual_dir: str | os.PathLike, data_dir: str | os.PathLike
) -> tfds.core.DatasetBuilder:
    """Builds `name` from the real files in `manual_dir` into ArrayRecord files under `data_dir`.

    Reuses an already prepared dataset. TFDS writes into an `incomplete.*` folder and renames it
    when done, so a failed build leaves no partial dataset.

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
    if name not in BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    builder = BUILDERS[name](data_dir=os.fspath(data_dir), file_format=FILE_FORMAT)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    return builder


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
    if name not in BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return tfds.data_source(
        name, split=split, data_dir=os.fspath(data_dir), download=False, decoders=decoders
    )
