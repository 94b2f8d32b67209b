"""Tests of the reid-jax command line: dispatch (fast) and the end-to-end smoke run (slow)."""

import json
import sys

import pytest

from reid_jax import cli
from reid_jax.training import evaluate as evaluate_lib
from reid_jax.training import loop


def _run_cli(argv, monkeypatch):
    # ml_collections' config flag reads override names from sys.argv: keep them identical.
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code


@pytest.mark.parametrize(
    "argv",
    [
        ["reid-jax"],
        ["reid-jax", "fly", "--workdir=/tmp/x"],
        ["reid-jax", "train", "--config=configs/ssan.py"],
        ["reid-jax", "evaluate", "--workdir=/tmp/x"],
    ],
)
def test_usage_errors_exit_nonzero(argv, monkeypatch):
    def must_not_run(*args):
        raise AssertionError(f"ran with {args}")

    monkeypatch.setattr(loop, "train_and_evaluate", must_not_run)
    monkeypatch.setattr(evaluate_lib, "evaluate_checkpoint", must_not_run)
    assert _run_cli(argv, monkeypatch) == 1


def test_train_and_evaluate_dispatch(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", lambda c, w: calls.append(("train", c, w)))
    monkeypatch.setattr(
        evaluate_lib, "evaluate_checkpoint", lambda c, w: calls.append(("evaluate", c, w))
    )
    workdir = str(tmp_path)
    assert _run_cli(
        [
            "reid-jax",
            "train",
            "--config",
            "configs/ssan.py:cuhk_pedes,smoke",
            "--workdir",
            workdir,
            "--config.optim.lr=3e-4",
        ],
        monkeypatch,
    ) in (0, None)
    assert _run_cli(
        ["reid-jax", "evaluate", "--config", "configs/ssan.py", "--workdir", workdir], monkeypatch
    ) in (0, None)
    (command, config, where), (command2, config2, where2) = calls
    assert (command, where, command2, where2) == ("train", workdir, "evaluate", workdir)
    assert config.data.dataset == "cuhk_pedes" and config.train.num_steps == 2
    assert config.optim.lr == 3e-4 and config.is_locked
    assert config2.data.dataset == "embedded"


@pytest.mark.slow
def test_smoke_train_resume_and_evaluate(monkeypatch, tmp_path):
    """The README's command on the smoke variant: train 2 steps, resume to 3, then evaluate
    the saved features."""
    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path / "data"))
    workdir = tmp_path / "run"
    base = ["reid-jax", "train", "--config", "configs/ssan.py:smoke", "--workdir", str(workdir)]
    assert _run_cli(base, monkeypatch) in (0, None)

    def steps():
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return [r["step"] for r in map(json.loads, lines) if "train/loss" in r]

    assert steps() == [1, 2]
    assert [p.name for p in (workdir / "checkpoints").iterdir()] == ["2"]
    first = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert first["step"] == 2
    assert set(first["metrics"]) >= {"global", "parts", "relation", "sum", "chance_R1"}
    for name in (
        "rank_list_first.png",
        "rank_list_first.html",
        "rank_list_worst.png",
        "rank_list_worst.html",
        "features.npz",
    ):
        assert (workdir / "eval" / name).exists(), name
    # Same command with one more step: resumes from checkpoint 2 instead of starting over.
    assert _run_cli(base + ["--config.train.num_steps=3"], monkeypatch) in (0, None)
    assert steps() == [1, 2, 3]
    assert json.loads((workdir / "eval" / "metrics.json").read_text())["step"] == 3
    # The saved features give the same numbers through `reid-jax evaluate --features`.
    final = json.loads((workdir / "eval" / "metrics.json").read_text())["metrics"]
    report_dir = tmp_path / "report"
    evaluate = [
        "reid-jax",
        "evaluate",
        "--features",
        str(workdir / "eval" / "features.npz"),
        "--workdir",
        str(report_dir),
    ]
    assert _run_cli(evaluate, monkeypatch) in (0, None)
    report = json.loads((report_dir / "metrics.json").read_text())
    for variant in ("global", "parts", "relation", "sum"):
        assert report[variant]["R1"] == pytest.approx(final[variant]["R1"], abs=1e-6)
