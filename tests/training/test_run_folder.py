"""The run folder as the source of truth: resumes checked against config.json, starting from
other weights (init_from) with a load report, the evaluation summary and finished runs."""

import json

import jax
import loop_toy_task as toy
import numpy as np
import pytest

from reid_jax.training import checkpoint, init_from, loop, run_folder, run_setup
from reid_jax.weights import flat


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """A finished 8-step toy run (checkpoints at 4 and 8, evaluation at 8)."""
    workdir = tmp_path_factory.mktemp("run_a")
    config = toy.toy_config()
    config.train.num_steps = 8
    loop.train_and_evaluate(config, workdir, task=toy)
    return workdir, config


def test_resume_refuses_changed_shapes_or_schedule(run_a):
    workdir, config = run_a
    changed = config.copy_and_resolve_references()
    changed.optim.lr = 0.5
    changed.model.head_extra = 3
    with pytest.raises(run_folder.RunConfigMismatch) as error:
        loop.train_and_evaluate(changed, workdir, task=toy)
    message = str(error.value)
    assert "model.head_extra: 0 in the run, 3 now" in message
    assert "optim.lr: 0.01 in the run, 0.5 now" in message
    assert message.startswith("config.model.head_extra:")
    assert json.loads((workdir / "config.json").read_text())["optim"]["lr"] == 0.01


def test_harmless_change_is_noted_and_finished_run_stops(run_a, capsys):
    workdir, config = run_a
    changed = config.copy_and_resolve_references()
    changed.train.log_every_steps = 4
    before = (workdir / "metrics.jsonl").read_text()
    result = loop.train_and_evaluate(changed, workdir, task=toy)
    out = capsys.readouterr().out
    assert "resuming with changed harmless fields: train.log_every_steps: 1 -> 4" in out
    assert "checkpoint at step 8 is at or past total_steps 8" in out
    summary = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert result == summary["last"]["metrics"]
    assert (workdir / "metrics.jsonl").read_text() == before  # nothing trained
    run_folder.write_config(workdir, config)  # restore for the other tests


def test_config_differences_and_harmless_fields():
    old = {"model": {"size": 1}, "eval": {"every_epochs": 1}, "init_from": ""}
    new = {"model": {"size": 2}, "eval": {"every_epochs": 3}, "init_from": "x", "extra": 1}
    diffs = run_folder.config_differences(old, new)
    assert diffs == [
        ("eval.every_epochs", 1, 3),
        ("extra", "<absent>", 1),
        ("init_from", "", "x"),
        ("model.size", 1, 2),
    ]
    assert [run_folder.is_harmless(name) for name, _, _ in diffs] == [True, False, True, False]
    assert run_folder.is_harmless("init_from_rules") and not run_folder.is_harmless("optim.lr")


def test_summary_keeps_last_and_first_best():
    history = [
        {"step": 4, "metrics": {"sum": {"R1": 50.0}}},
        {"step": 8, "metrics": {"sum": {"R1": 70.0}}},
        {"step": 12, "metrics": {"sum": {"R1": 70.0}}},
        {"step": 16, "metrics": {"sum": {"R1": 60.0}}},
        {"step": 8, "metrics": {"sum": {"R1": 70.0}}},  # a re-evaluation of an older step
    ]
    summary = run_folder.summarize(history, "sum/R1")
    assert summary["last"]["step"] == 16
    assert (summary["best"]["step"], summary["best"]["value"]) == (8, 70.0)
    with pytest.raises(KeyError, match=r"'sum/R2' is not one of \['sum/R1'\]"):
        run_folder.summarize(history, "sum/R2")


def test_init_from_loads_matching_and_keeps_fresh_rest(run_a, capsys, tmp_path):
    workdir, _ = run_a
    config = toy.toy_config()
    config.model.head_extra = 2  # 6 classes instead of 4: the classifier cannot load
    config.init_from = str(workdir)
    setup = run_setup.setup_run(config, tmp_path, toy)
    variables, report = run_setup.initial_variables(setup, config)
    source = checkpoint.restore_variables(workdir / "checkpoints" / "8")
    fresh = jax.device_get(setup.init_variables(jax.random.key(config.seed)))
    variables = jax.device_get(variables)
    np.testing.assert_array_equal(
        variables["params"]["body"]["kernel"], source["params"]["body"]["kernel"]
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["norm"]["mean"], source["batch_stats"]["norm"]["mean"]
    )
    assert not np.array_equal(fresh["params"]["body"]["kernel"], source["params"]["body"]["kernel"])
    np.testing.assert_array_equal(
        variables["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"]
    )
    assert report.mismatched == {
        "params/head/bias": ((4,), (6,)),
        "params/head/kernel": ((16, 4), (16, 6)),
    }
    assert report.new == [] and report.unused == []
    assert len(report.loaded) == 6  # body kernel/bias, norm scale/bias, norm mean/var
    # The run itself prints the report and trains from there.
    config.train.num_steps = 2
    loop.train_and_evaluate(config, tmp_path, task=toy)
    out = capsys.readouterr().out
    assert f"init_from {workdir / 'checkpoints' / '8'}:" in out
    assert "shape mismatches" in out and "params/head/kernel source [16, 4] vs model [16, 6]" in out


def test_strict_init_from_lists_the_paths(run_a, tmp_path):
    workdir, _ = run_a
    config = toy.toy_config()
    config.model.head_extra = 2
    config.init_from = str(workdir / "checkpoints" / "4")
    config.init_from_strict = True
    setup = run_setup.setup_run(config, tmp_path, toy)
    with pytest.raises(
        init_from.InitFromError, match=r"shape mismatch: params/head/bias source \[4\]"
    ):
        run_setup.initial_variables(setup, config)


def test_rules_map_names_and_weights_files_load(tmp_path):
    source = {
        "params/trunk/conv/kernel": np.ones((3, 3)),
        "params/fc/kernel": np.ones(2),
        "params/other": np.zeros(1),
    }
    rules = [(r"^params/trunk/", "params/backbone/"), (r"^params/fc/.*", ""), (r".*", r"\g<0>")]
    mapped = init_from.map_names(source, rules)
    assert sorted(mapped) == ["params/backbone/conv/kernel", "params/other"]
    with pytest.raises(init_from.InitFromError, match="both map to"):
        init_from.map_names(source, [(r"^params/.*", "params/same")])
    path = flat.save_weights_npz(tmp_path / "w", {"params": {"a": np.arange(3.0)}}, {"epoch": 3})
    arrays, resolved = init_from.read_source(path)
    assert resolved == path and list(arrays) == ["params/a"]
    merged, report = init_from.merge_into(
        {"params/a": np.zeros(3, np.float32), "params/b": np.zeros(2, np.float32)}, arrays, "w"
    )
    assert merged["params/a"].dtype == np.float32 and merged["params/a"].tolist() == [0, 1, 2]
    assert report.loaded == ["params/a"] and report.new == ["params/b"]
    assert "loaded                      1 arrays              3 values" in report.summary()
    for bad, message in (
        (tmp_path / "missing", "does not exist"),
        (tmp_path, "holds no checkpoint"),
    ):
        with pytest.raises(init_from.InitFromError, match=message):
            init_from.resolve_source(bad)
    (tmp_path / "model.pth").write_bytes(b"x")
    with pytest.raises(init_from.InitFromError, match="import-weights"):
        init_from.resolve_source(tmp_path / "model.pth")


def test_bad_images_policy_is_filled_in_for_older_runs_and_may_change_on_resume(tmp_path):
    """data.bad_images came later: a run folder without it reads as 'stop' (what it did), and
    a run stopped by an unreadable image may resume with 'skip'."""
    config = toy.toy_config()
    run_folder.write_config(tmp_path, config)
    older = json.loads((tmp_path / "config.json").read_text())
    del older["data"]["bad_images"]
    (tmp_path / "config.json").write_text(json.dumps(older))
    assert run_folder.load_config(tmp_path).data.bad_images == "stop"
    skip = config.copy_and_resolve_references()
    skip.data.bad_images = "skip"
    assert run_folder.check_resume_config(tmp_path, skip) == [
        ("data.bad_images", "<absent>", "skip")
    ]
    from reid_jax import config_lib

    skip.data.bad_images = "ignore"
    with pytest.raises(config_lib.ConfigError, match=r"data\.bad_images.*'stop', 'skip'"):
        config_lib.validate(skip)
