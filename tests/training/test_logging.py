"""Tests of run logging: metrics.jsonl, NaN checks, truncation on resume, atomic JSON."""

import json
import math

import pytest

from reid_jax.training import logging as run_logging


def test_check_finite_names_step_and_metric():
    run_logging.check_finite(3, {"loss": 1.0, "acc": 0.0})
    with pytest.raises(FloatingPointError, match=r"step 7.*'loss': nan"):
        run_logging.check_finite(7, {"loss": math.nan, "acc": 0.5})
    with pytest.raises(FloatingPointError, match=r"step 2.*'acc': inf"):
        run_logging.check_finite(2, {"loss": 1.0, "acc": math.inf})


def test_writer_appends_one_object_per_step_and_truncates(tmp_path):
    writer = run_logging.MetricWriter(tmp_path)
    for step in (1, 2, 3, 4):
        writer.write(step, {"train/loss": step / 2}, epoch=0)
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[2] == {"step": 3, "epoch": 0, "train/loss": 1.5}
    assert list((tmp_path / "tensorboard").iterdir())  # event file written
    run_logging.truncate_metrics(tmp_path, 2)
    kept = [
        json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert kept == [1, 2]


def test_disabled_writer_writes_nothing(tmp_path):
    writer = run_logging.MetricWriter(tmp_path, enabled=False)
    writer.write(1, {"loss": 1.0})
    writer.close()
    assert not list(tmp_path.iterdir())


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    path = tmp_path / "eval" / "metrics.json"
    run_logging.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    run_logging.write_json_atomic(path, {"c": 2})
    assert json.loads(path.read_text()) == {"c": 2}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    with pytest.raises(TypeError):
        run_logging.write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"c": 2}  # old file intact, no temporary left
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


@pytest.fixture
def info_logging():
    """INFO records reach the handlers, as under the CLI (absl's default is WARNING)."""
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    yield
    absl_logging.set_verbosity(verbosity)


def test_process_log_file_holds_this_process_records_and_its_failure(
    tmp_path, monkeypatch, info_logging
):
    from absl import logging as absl_logging

    monkeypatch.setattr(run_logging.jax, "process_index", lambda: 1)
    with run_logging.process_log_file(tmp_path) as path:
        absl_logging.info("inside the run")
    absl_logging.info("after the run")
    assert path == tmp_path / "logs" / "process_1.log"
    first = path.read_text()
    assert "process 1 of 1 on" in first and "inside the run" in first
    assert "after the run" not in first  # the handler is gone with the block
    with pytest.raises(ZeroDivisionError):
        with run_logging.process_log_file(tmp_path):
            absl_logging.info("second command")
            _ = 1 / 0
    lines = path.read_text().splitlines()
    assert lines[: len(first.splitlines())] == first.splitlines()  # appended, not replaced
    second = "\n".join(lines[len(first.splitlines()) :])
    assert "second command" in second
    assert "stopped by an exception" in second and "ZeroDivisionError: division by zero" in second
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["process_1.log"]
