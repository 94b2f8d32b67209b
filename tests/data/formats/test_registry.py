"""Tests for the `DATASET_LOADERS` registry and the no-JAX/TF rule of the format package."""

from __future__ import annotations

import os
import subprocess
import sys

import reid_jax
from reid_jax.data.formats import DATASET_LOADERS
from reid_jax.data.formats.cuhk03 import load_cuhk03
from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
from reid_jax.data.formats.dukemtmc import load_dukemtmc
from reid_jax.data.formats.icfg_pedes import load_icfg_pedes
from reid_jax.data.formats.market1501 import load_market1501
from reid_jax.data.formats.msmt17 import load_msmt17
from reid_jax.data.formats.rstpreid import load_rstpreid


def test_registry_maps_names_to_loaders():
    assert DATASET_LOADERS == {
        "cuhk_pedes": load_cuhk_pedes,
        "icfg_pedes": load_icfg_pedes,
        "rstpreid": load_rstpreid,
        "market1501": load_market1501,
        "dukemtmc": load_dukemtmc,
        "cuhk03": load_cuhk03,
        "msmt17": load_msmt17,
    }


def test_format_modules_import_neither_jax_nor_tensorflow():
    modules = [
        "aptm_json",
        "attributes",
        "cuhk03",
        "cuhk_pedes",
        "dukemtmc",
        "icfg_pedes",
        "mals",
        "market1501",
        "msmt17",
        "pa100k",
        "peta",
        "rstpreid",
    ]
    code = (
        "import sys\n"
        + "".join(f"import reid_jax.data.formats.{m}\n" for m in modules)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow')))"
    )
    repo = os.path.dirname(os.path.dirname(reid_jax.__file__))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": repo},
    )
    assert out.stdout.strip() == "[]"
