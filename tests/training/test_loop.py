"""Tests of the generic training loop with a seconds-fast stand-in task (loop_toy_task.py):
resume after a crash replays exactly, NaN stops with the step, SIGTERM saves and exits."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import loop_toy_task as toy
import numpy as np
import pytest

from reid_jax import config_lib, sharding
from reid_jax.training import checkpoint as checkpoint_lib
from reid_jax.training import evaluate as evaluate_lib
from reid_jax.training import loop

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def _metrics(workdir):
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _losses(workdir):
    return {r["step"]: r["train/loss"] for r in _metrics(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = loop.train_and_evaluate(toy.toy_config(), workdir, task=toy)
    return workdir, result


def test_run_writes_workdir(uninterrupted):
    workdir, result = uninterrupted
    config = json.loads((workdir / "config.json").read_text())
    assert config["task"] == "toy" and config["train"]["num_steps"] == 12
    assert sorted(_losses(workdir)) == list(range(1, 13))
    record = _metrics(workdir)[5]
    assert record["epoch"] == 0 and record["lr/body"] == pytest.approx(1e-3)
    assert _metrics(workdir)[-2]["lr/rest"] == pytest.approx(1e-3)  # x0.1 from epoch 1
    evaluation = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert evaluation["last"] == {"step": 12, "metrics": result}
    history = [
        json.loads(line) for line in (workdir / "eval" / "history.jsonl").read_text().splitlines()
    ]
    assert [record["step"] for record in history] == [8, 12]  # every epoch + end
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "8"]
    # best/ holds the evaluation with the highest toy/accuracy (the earlier one on ties).
    accuracies = [record["metrics"]["toy"]["accuracy"] for record in history]
    best_step = history[int(np.argmax(accuracies))]["step"]
    assert evaluation["best"]["step"] == best_step
    assert evaluation["best"]["value"] == max(accuracies)
    assert [p.name for p in (workdir / "best").iterdir()] == [str(best_step)]
    info = json.loads((workdir / "data_info.json").read_text())
    assert info["num_classes"] == toy.NUM_CLASSES and info["steps_per_epoch"] == 8


def test_resume_after_crash_replays_exactly(uninterrupted, tmp_path, monkeypatch):
    reference_dir, reference = uninterrupted
    real = sharding.host_batch_to_global
    calls = []

    def crash_on_seventh_batch(batch, mesh):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("simulated crash")
        return real(batch, mesh)

    monkeypatch.setattr(sharding, "host_batch_to_global", crash_on_seventh_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(toy.toy_config(), tmp_path, task=toy)
    # Steps 5-6 ran, not saved; 5 was logged once step 6 was queued, 6's line waited for
    # step 7, which never came (the loop logs an interval after queueing the next step).
    assert sorted(_losses(tmp_path)) == list(range(1, 6))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["4"]
    monkeypatch.setattr(sharding, "host_batch_to_global", real)
    # A fresh call = a new process: new model, optimizer, loader and iterator objects.
    resumed = loop.train_and_evaluate(toy.toy_config(), tmp_path, task=toy)
    steps = [r["step"] for r in _metrics(tmp_path) if "train/loss" in r]
    assert steps == list(range(1, 13))  # lines after the checkpoint were dropped, no repeats
    want, got = _losses(reference_dir), _losses(tmp_path)
    np.testing.assert_allclose(
        [got[s] for s in range(1, 13)], [want[s] for s in range(1, 13)], rtol=1e-6, atol=0
    )
    assert resumed == reference
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["last"]["step"] == 12


def test_rerun_after_a_crash_before_the_first_checkpoint_logs_each_step_once(
    uninterrupted, tmp_path, monkeypatch
):
    """A run killed before its first checkpoint completed starts anew; the lines the dead
    process logged must not stay in front of the new run's (found by fault injection)."""
    reference_dir, _ = uninterrupted
    real = sharding.host_batch_to_global
    calls = []

    def crash_on_third_batch(batch, mesh):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(batch, mesh)

    monkeypatch.setattr(sharding, "host_batch_to_global", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(toy.toy_config(), tmp_path, task=toy)
    assert sorted(_losses(tmp_path)) == [1]  # logged, but the first checkpoint (4) never came
    monkeypatch.setattr(sharding, "host_batch_to_global", real)
    loop.train_and_evaluate(toy.toy_config(), tmp_path, task=toy)
    steps = [r["step"] for r in _metrics(tmp_path) if "train/loss" in r]
    assert steps == list(range(1, 13))
    assert _losses(tmp_path) == _losses(reference_dir)


def test_a_resume_inside_a_log_interval_logs_the_same_means(tmp_path, monkeypatch):
    """Checkpoint 4 falls inside the interval 4-6 (log every 3 steps): the resumed run's line
    for step 6 must average steps 4, 5 and 6 as the uninterrupted run's does, bit for bit."""
    config = toy.toy_config()
    config.train.log_every_steps = 3
    loop.train_and_evaluate(config, tmp_path / "reference", task=toy)
    real = sharding.host_batch_to_global
    calls = []

    def crash_on_sixth_batch(batch, mesh):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("simulated crash")
        return real(batch, mesh)

    monkeypatch.setattr(sharding, "host_batch_to_global", crash_on_sixth_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(config, tmp_path / "resumed", task=toy)
    monkeypatch.setattr(sharding, "host_batch_to_global", real)
    loop.train_and_evaluate(config, tmp_path / "resumed", task=toy)
    want = _metrics(tmp_path / "reference")
    got = _metrics(tmp_path / "resumed")
    for records in (want, got):
        for record in records:
            record.pop("train/images_per_second", None)
    assert [r["step"] for r in got if "train/loss" in r] == [3, 6, 9, 12]
    assert got == want


def test_logging_fetches_an_interval_only_after_the_next_step_is_queued(tmp_path, monkeypatch):
    """The device is never left idle by a log: the metrics of step s are fetched after step
    s + 1's batch went to the device, except where the state must be known (a checkpoint,
    an evaluation, the last step)."""
    events = []
    real_put, real_check = sharding.host_batch_to_global, loop._check_finite

    def put(batch, mesh):
        events.append(("put", len([e for e in events if e[0] == "put"]) + 1))
        return real_put(batch, mesh)

    def check(pending, last_step):
        events.append(("fetch", last_step))
        return real_check(pending, last_step)

    monkeypatch.setattr(sharding, "host_batch_to_global", put)
    monkeypatch.setattr(loop, "_check_finite", check)
    config = toy.toy_config()
    config.train.log_every_steps = 3
    loop.train_and_evaluate(config, tmp_path, task=toy)
    fetches = [step for kind, step in events if kind == "fetch"]
    assert fetches == [3, 4, 6, 8, 9, 12]  # log 3, save 4, log 6, save 8, log 9, last 12
    for step in (3, 6, 9):  # logged intervals: after step + 1's batch
        assert events.index(("fetch", step)) > events.index(("put", step + 1))
    for step in (4, 8):  # checkpoints: before the next batch
        assert events.index(("fetch", step)) < events.index(("put", step + 1))
    assert sorted(_losses(tmp_path)) == [3, 6, 9, 12]


def test_rerun_of_finished_run_does_not_train(uninterrupted):
    workdir, reference = uninterrupted
    before = (workdir / "metrics.jsonl").read_text()
    assert loop.train_and_evaluate(toy.toy_config(), workdir, task=toy) == reference
    assert (workdir / "metrics.jsonl").read_text() == before


def test_evaluate_checkpoint_restores_the_final_state(uninterrupted, tmp_path):
    workdir, reference = uninterrupted
    metrics_file = workdir / "eval" / "metrics.json"
    saved = metrics_file.read_text()
    history_file = workdir / "eval" / "history.jsonl"
    saved_history = history_file.read_text()
    try:
        # The config comes from the run's config.json.
        assert evaluate_lib.evaluate_checkpoint(workdir, task=toy) == reference
        assert json.loads(metrics_file.read_text())["last"]["step"] == 12
        assert evaluate_lib.evaluate_checkpoint(workdir, step=8, task=toy)
        records = [json.loads(line) for line in history_file.read_text().splitlines()]
        assert [r["step"] for r in records[-2:]] == [12, 8]
        best = json.loads(metrics_file.read_text())["best"]
        assert evaluate_lib.evaluate_checkpoint(workdir, best=True, task=toy) == best["metrics"]
    finally:
        metrics_file.write_text(saved)
        history_file.write_text(saved_history)
    with pytest.raises(evaluate_lib.NoCheckpointError, match="no checkpoint"):
        evaluate_lib.evaluate_checkpoint(tmp_path, toy.toy_config(), task=toy)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_nan_stops_with_the_step(tmp_path):
    config = toy.toy_config()
    config.loss.nan_from_step = 3
    config.train.log_every_steps = 2  # the NaN step is inside an interval, not at its end
    with pytest.raises(FloatingPointError, match=r"step 3\b.*loss"):
        loop.train_and_evaluate(config, tmp_path, task=toy)


def test_batch_must_split_over_devices(tmp_path):
    config = toy.toy_config()
    config.train.batch_size = 12  # 8 fake devices
    with pytest.raises(config_lib.ConfigError, match="config.train.batch_size"):
        loop.train_and_evaluate(config, tmp_path, task=toy)


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {here!r}]
    import loop_toy_task as toy
    from reid_jax.training import loop
    config = toy.toy_config()
    config.train.num_steps = 10**7
    config.train.log_every_steps = 5
    config.checkpoint.every_steps = 10**7
    loop.train_and_evaluate(config, sys.argv[1], task=toy)
""")


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SIGTERM_SCRIPT.format(repo=str(REPO), here=str(HERE)))
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while not (workdir / "metrics.jsonl").exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "training never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "SIGTERM received: checkpoint saved at step" in stdout
    step = int(stdout.split("checkpoint saved at step ")[1].split(";")[0])
    assert [p.name for p in (workdir / "checkpoints").iterdir()] == [str(step)]
    assert step >= 5


def test_a_non_finite_state_is_never_saved(tmp_path):
    config = toy.toy_config()
    config.loss.nan_from_step = 3
    config.train.log_every_steps = 10  # no log before the step-4 save: the save checks itself
    with pytest.raises(FloatingPointError, match=r"step 3\b"):
        loop.train_and_evaluate(config, tmp_path, task=toy)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


FULL_DISK_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path[:0] = [{repo!r}, {here!r}]
    import loop_toy_task as toy
    from reid_jax import cli_errors
    from reid_jax.training import checkpoint, loop
    real_save = checkpoint.save_checkpoint

    def save(manager, step, state, iterator, *args, **kwargs):
        if step == 8:  # checkpoint 4 is complete; from now on the disk takes no more bytes
            manager.wait_until_finished()
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
        real_save(manager, step, state, iterator, *args, **kwargs)

    checkpoint.save_checkpoint = save
    config = toy.toy_config()
    config.checkpoint.async_save = sys.argv[2] == "async"
    try:
        loop.train_and_evaluate(config, sys.argv[1], task=toy)
    except Exception as error:
        sys.exit(cli_errors.report(error, debug=False))  # what `reid-jax train` prints
""")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_full_disk_stops_naming_the_folder_and_keeps_the_last_checkpoint(
    uninterrupted, tmp_path, mode
):
    """Issue 14, item 5: when the run folder stops taking writes mid-run, the run stops with
    one line naming the checkpoint folder, the step and the intact checkpoint, which the same
    command then resumes from to the uninterrupted result.

    Tests may run as root, whom a read-only folder (chmod) does not stop, so the disk is
    filled instead: RLIMIT_FSIZE = 0 makes the kernel refuse every write that grows a file
    (EFBIG, as ENOSPC would on a full disk), for root too and for tensorstore's C++ writes as
    well as Python's. It applies to the whole process, hence the subprocess (pytest's own
    capture files would fail too); its stdout and stderr are pipes, which it does not limit.
    """
    reference_dir, reference = uninterrupted
    script = tmp_path / "run.py"
    script.write_text(FULL_DISK_SCRIPT.format(repo=str(REPO), here=str(HERE)))
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the suite's 8 CPU devices (XLA_FLAGS)
    proc = subprocess.run(
        [sys.executable, str(script), str(workdir), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    folder = workdir / "checkpoints"
    assert errors[0] == (
        f"error: {folder}: writing a checkpoint failed while saving step 8 ([Errno 27] File "
        "too large); is the disk full or the folder not writable? The last complete "
        f"checkpoint, {folder / '4'}, is intact: make room and re-run the same command to "
        "resume from it"
    )
    assert [p.name for p in checkpoint_lib.step_folders(folder)] == ["4"]
    # The same command, with room again, resumes from checkpoint 4 and ends where the
    # uninterrupted run ended.
    config = toy.toy_config()
    config.checkpoint.async_save = mode == "async"
    resumed = loop.train_and_evaluate(config, workdir, task=toy)
    want, got = _losses(reference_dir), _losses(workdir)
    np.testing.assert_allclose(
        [got[s] for s in range(1, 13)], [want[s] for s in range(1, 13)], rtol=1e-6, atol=0
    )
    assert resumed == reference
