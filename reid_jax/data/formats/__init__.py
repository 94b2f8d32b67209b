"""Readers for the real dataset files: one module per format, files -> plain records.

No JAX, no TensorFlow. Every reader raises `reid_jax.data.errors.DatasetFormatError` naming the
file, the record and the field on bad input, and logs known dataset quirks once with a count.

`DATASET_LOADERS` maps a dataset name to its `loader(root) -> list[record]` (an explicit dict,
never an import string).
"""

from __future__ import annotations

from collections.abc import Callable

from reid_jax.data.formats.cuhk03 import load_cuhk03
from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
from reid_jax.data.formats.dukemtmc import load_dukemtmc
from reid_jax.data.formats.icfg_pedes import load_icfg_pedes
from reid_jax.data.formats.market1501 import load_market1501
from reid_jax.data.formats.msmt17 import load_msmt17
from reid_jax.data.formats.rstpreid import load_rstpreid

DATASET_LOADERS: dict[str, Callable[..., list]] = {
    "cuhk_pedes": load_cuhk_pedes,
    "icfg_pedes": load_icfg_pedes,
    "rstpreid": load_rstpreid,
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "cuhk03": load_cuhk03,
    "msmt17": load_msmt17,
}

__all__ = ["DATASET_LOADERS"]
