"""A training image that stops decoding after the dataset was parsed: `reid-jax train` stops
with one line naming it (data.bad_images='stop'), or replaces it and counts it in the logged
metrics ('skip'), on the AlignedReID smoke config (issue 14, item 4)."""

import json

import numpy as np
import pytest

from reid_jax import cli, config_lib
from reid_jax.data import transforms
from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.samplers import PkSampler
from reid_jax.training.tasks import alignedreid

CONFIG = "configs/alignedreid.py:smoke"


def _train_records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


@pytest.mark.slow
def test_smoke_run_stops_on_a_truncated_image_then_skips_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path / "data"))  # a private copy to damage
    config = config_lib.load_config_file(CONFIG)
    records = alignedreid.load_split(config.data, "train")  # generates and parses the data
    labels = alignedreid.train_labels(records)
    k = config.data.images_per_identity
    sampler = PkSampler(labels, config.train.batch_size // k, k, config.seed)
    steps = [sampler.global_batch(step) for step in range(config.train.num_steps)]
    # A record of step 1 whose identity has other images (one of them stands in).
    bad = next(int(r) for r in steps[0] if np.sum(labels == labels[r]) > 1)
    path = records[bad].image_path
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError):
        transforms.load_rgb(path)

    workdir = tmp_path / "run"
    train = ["train", "--config", CONFIG, "--workdir", str(workdir)]
    assert cli.main(train) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # not tqdm's
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {path}, field 'image': cannot read this training image")
    assert errors[0].endswith("--config.data.bad_images=skip")
    assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())

    # The same command with 'skip' trains; each step logs how many images it replaced.
    assert cli.main([*train, "--config.data.bad_images=skip"]) == 0
    logged = _train_records(workdir)
    assert [r["step"] for r in logged] == [1, 2]
    assert [r["data/skipped_images"] for r in logged] == [float(np.sum(s == bad)) for s in steps]
    assert logged[0]["data/skipped_images"] >= 1
    assert all(np.isfinite(r["train/loss"]) for r in logged)
    assert json.loads((workdir / "config.json").read_text())["data"]["bad_images"] == "skip"
