"""Training from a prepared (TFDS ArrayRecord) dataset gives the batches of the image folder.

Each task's smoke config builds its training stream twice over one embedded dataset: from the
generated folder of image files and, with `data.tfds_dir`, from the ArrayRecord copy the run
prepares on first use. The batches must be identical bit for bit, and a stream resumed from a
grain iterator state continues exactly. One end-to-end AlignedReID smoke run per source then
compares the logged losses (slow).
"""

import importlib.util
import itertools
import json

import jax
import numpy as np
import pytest

from reid_jax.data import dataset_root, image_locations
from reid_jax.data.builders import registry
from reid_jax.training import loop
from reid_jax.training.tasks import alignedreid, aptm, ssan

NUM_BATCHES = 3
# task module, config file, config argument, the builder of the embedded part it reads
TASKS = {
    "ssan": (ssan, "ssan", "smoke", "cuhk_pedes"),
    "alignedreid": (alignedreid, "alignedreid", "smoke", "market1501"),
    "aptm_mals": (aptm, "aptm", "embedded_pretrain,smoke", "mals"),
}


def _config(name, arg):
    spec = importlib.util.spec_from_file_location(f"{name}_config", f"configs/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """(embedded data cache, TFDS data dir) shared by every test of this module."""
    return tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("tfds")


@pytest.fixture
def data_env(data_dirs, monkeypatch):
    data_cache, tfds_dir = data_dirs
    monkeypatch.setenv("REID_JAX_DATA", str(data_cache))
    return tfds_dir


def _loader(name, tfds_dir, workdir):
    task, config_file, arg, builder = TASKS[name]
    config = _config(config_file, arg)
    config.data.tfds_dir = str(tfds_dir)
    loader, info = task.make_train_data(config, workdir, shard_index=0, shard_count=1)
    if tfds_dir:
        prepared_dir = tfds_dir / dataset_root.embedded_folder_name(config.data)
        assert registry.is_prepared(builder, prepared_dir)
    return loader, info


def _assert_same_batches(want, got):
    assert set(want) == set(got)
    for key in want:
        assert want[key].dtype == got[key].dtype, key
        np.testing.assert_array_equal(want[key], got[key], err_msg=key)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_prepared_dataset_gives_the_batches_of_the_image_folder(name, data_env, tmp_path):
    folder_loader, folder_info = _loader(name, "", tmp_path / "folder")
    prepared_loader, prepared_info = _loader(name, data_env, tmp_path / "prepared")
    assert prepared_info == folder_info
    batches = zip(iter(folder_loader), iter(prepared_loader), strict=False)
    compared = 0
    for folder_batch, prepared_batch in itertools.islice(batches, NUM_BATCHES):
        _assert_same_batches(folder_batch, prepared_batch)
        compared += 1
    assert compared == NUM_BATCHES


def test_records_point_into_the_prepared_dataset(data_env, tmp_path):
    config = _config("ssan", "smoke")
    folder = ssan.load_split(config.data, "train")
    config.data.tfds_dir = str(data_env)
    prepared = ssan.load_split(config.data, "train")
    assert [r.captions for r in prepared] == [r.captions for r in folder]
    location = image_locations.parse_location(prepared[5].image_path)
    assert (location.name, location.split, location.position) == ("cuhk_pedes", "train", 5)


def test_resume_from_an_iterator_state_is_exact(data_env, tmp_path):
    loader, _ = _loader("ssan", data_env, tmp_path / "run")
    iterator = iter(loader)
    next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(2)]
    resumed = iter(_loader("ssan", data_env, tmp_path / "run")[0])
    resumed.set_state(state)
    for want in expected:
        _assert_same_batches(want, next(resumed))


def test_dataset_without_builder_is_refused(tmp_path):
    config = _config("alignedreid", "dukemtmc,smoke")
    config.data.root = str(tmp_path)
    config.data.tfds_dir = str(tmp_path)
    with pytest.raises(ValueError, match="config.data.tfds_dir: dataset 'dukemtmc'"):
        alignedreid.load_split(config.data, "train")


def test_unprepared_real_dataset_names_the_command(tmp_path):
    config = _config("ssan", "cuhk_pedes,smoke")
    config.data.tfds_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="reid-jax prepare --dataset cuhk_pedes"):
        ssan.load_split(config.data, "train")


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "loss" in k} for line in lines]


@pytest.mark.slow  # two AlignedReID smoke runs, about 30 s each
def test_smoke_runs_from_folder_and_prepared_dataset_log_the_same_losses(data_env, tmp_path):
    runs = {}
    for source, tfds_dir in (("folder", ""), ("prepared", str(data_env))):
        config = _config("alignedreid", "smoke")
        config.data.tfds_dir = tfds_dir
        loop.train_and_evaluate(config, tmp_path / source, task=alignedreid)
        runs[source] = _losses(tmp_path / source)
    assert runs["folder"] and any(runs["folder"][0].values())
    assert runs["prepared"] == runs["folder"]
    jax.clear_caches()
