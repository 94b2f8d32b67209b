"""The embedded dataset's cache folder is keyed by its generator options for every task."""

from pathlib import Path

import pytest

from reid_jax import config_lib
from reid_jax.data import dataset_root

CONFIGS = Path(__file__).parents[2] / "configs"


def _config(name, arg):
    return config_lib.load_config_file(f"{CONFIGS / name}.py:{arg or ''}")


@pytest.mark.parametrize("name", ["ssan", "alignedreid"])
def test_default_options_share_one_folder_and_others_get_their_own(name):
    default = _config(name, None).data
    assert dataset_root.embedded_folder_name(default) == "embedded"
    smoke = _config(name, "smoke").data
    smoke.embedded_image_size = (64, 32)
    keyed = dataset_root.embedded_folder_name(smoke)
    assert keyed.startswith("embedded-") and keyed == dataset_root.embedded_folder_name(smoke)
    smoke.embedded_seed = 1
    assert dataset_root.embedded_folder_name(smoke) not in (keyed, "embedded")


def test_root_lives_under_reid_jax_data(monkeypatch, tmp_path):
    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path))
    assert dataset_root.embedded_cache_dir() == tmp_path
    data = _config("ssan", "cuhk_pedes").data
    data.root = "/somewhere/CUHK-PEDES"
    assert dataset_root.dataset_root(data, "CUHK-PEDES") == Path("/somewhere/CUHK-PEDES")
