"""Tests of the reid-jax command line: help, one-line errors with exit status 2, dispatch
(fast), and the smoke run through train / refused resume / evaluate / fine-tune (slow)."""

import json

import pytest

from reid_jax import cli
from reid_jax.training import evaluate as evaluate_lib
from reid_jax.training import loop


@pytest.fixture
def no_runs(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError(f"ran with {args}")

    monkeypatch.setattr(loop, "train_and_evaluate", must_not_run)
    monkeypatch.setattr(evaluate_lib, "evaluate_checkpoint", must_not_run)


def test_help_lists_the_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command, (summary, example) in cli.COMMANDS.items():
        assert command in out and summary in out and example in out
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--workdir" in out and "--features" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["fly", "--workdir=/tmp/x"], "invalid choice: 'fly'"),
        (["train", "--config=configs/ssan.py"], "--workdir"),
        (["train", "--config=configs/ssan.py", "--workdir=/tmp/x", "--features=f"], "--features"),
        (["train", "--config=configs/ssan.py", "--workdir=/tmp/x", "--best"], "--best"),
        (["train", "--config=configs/missing.py", "--workdir=/tmp/x"], "no such config file"),
        (
            ["train", "--config=configs/ssan.py", "--workdir=/tmp/x", "--config.optim.lrr=1"],
            "config.optim.lrr: no such field (did you mean config.optim.lr?)",
        ),
        (
            ["train", "--config=configs/ssan.py:market", "--workdir=/tmp/x"],
            "unknown variant 'market'",
        ),
        (
            ["train", "--config=configs/ssan.py", "--workdir=/tmp/x", "--config.optim.lr"],
            "needs a value",
        ),
    ],
)
def test_mistakes_print_one_line_and_exit_2(argv, message, no_runs, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_debug_shows_the_traceback(no_runs, capsys):
    argv = ["train", "--config=configs/ssan.py", "--workdir=/tmp/x", "--config.optim.lrr=1"]
    assert cli.main(argv + ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_evaluate_of_a_folder_without_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["evaluate", "--workdir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint to evaluate" in err
    assert not run.exists()


def test_train_dispatch_applies_overrides(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(loop, "train_and_evaluate", lambda c, w: calls.append((c, w)))
    argv = ["train", "--config", "configs/ssan.py:cuhk_pedes,smoke", "--workdir", str(tmp_path)]
    assert cli.main(argv + ["--config.optim.lr=3e-4", "--config.data.root", "/data/c"]) == 0
    ((config, workdir),) = calls
    assert workdir == str(tmp_path) and config.is_locked
    assert config.data.dataset == "cuhk_pedes" and config.train.num_steps == 2
    assert config.optim.lr == 3e-4 and config.data.root == "/data/c"


def _steps(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if "train/loss" in r]


@pytest.mark.slow
def test_smoke_train_refused_resume_evaluate_and_fine_tune(monkeypatch, tmp_path, capsys):
    """The README's commands on the smoke variant: train, a resume with another feature size
    is refused, evaluate from the run folder alone, re-score the saved features, and
    fine-tune run B from run A with another number of identities."""
    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path / "data"))
    run_a = tmp_path / "a"
    base = ["train", "--config", "configs/ssan.py:smoke", "--workdir", str(run_a)]
    assert cli.main(base) == 0
    assert _steps(run_a) == [1, 2]
    assert [p.name for p in (run_a / "checkpoints").iterdir()] == ["2"]
    summary = json.loads((run_a / "eval" / "metrics.json").read_text())
    assert summary["last"]["step"] == summary["best"]["step"] == 2
    assert summary["best"]["metric"] == "sum/R1"
    assert [p.name for p in (run_a / "best").iterdir()] == ["2"]
    out = capsys.readouterr().out
    assert "text->image retrieval" in out and "sum " in out  # the result table on stdout
    for name in ("rank_list_first.png", "rank_list_worst.html", "features.npz"):
        assert (run_a / "eval" / name).exists(), name

    # A resume that changes shapes is refused with both values, and changes nothing.
    assert cli.main(base + ["--config.model.feature_dim=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.feature_dim: 32 in the run, 64 now" in err
    assert json.loads((run_a / "config.json").read_text())["model"]["feature_dim"] == 32

    # Evaluate needs only the run folder; same numbers as at the end of training.
    assert cli.main(["evaluate", "--workdir", str(run_a)]) == 0
    again = json.loads((run_a / "eval" / "metrics.json").read_text())["last"]["metrics"]
    assert again["sum"]["R1"] == pytest.approx(summary["last"]["metrics"]["sum"]["R1"], abs=1e-6)

    # The saved features give the same numbers through `reid-jax evaluate --features`.
    report_dir = tmp_path / "report"
    features = run_a / "eval" / "features.npz"
    assert cli.main(["evaluate", "--features", str(features), "--workdir", str(report_dir)]) == 0
    report = json.loads((report_dir / "metrics.json").read_text())
    for variant in ("global", "parts", "relation", "sum"):
        assert report[variant]["R1"] == pytest.approx(again[variant]["R1"], abs=1e-6)

    # Fine-tune B from A on a dataset with 6 instead of 8 training identities.
    run_b = tmp_path / "b"
    fine_tune = [
        "train", "--config", "configs/ssan.py:smoke", "--workdir", str(run_b),
        f"--config.init_from={run_a}", "--config.data.embedded_sizes.cuhk_train_ids=6",
    ]  # fmt: skip
    assert cli.main(fine_tune) == 0
    out = capsys.readouterr().out
    assert f"init_from {run_a / 'checkpoints' / '2'}:" in out
    assert "shape mismatches            6 arrays" in out  # kernel + bias of 3 classifiers
    assert "params/classifier_global/kernel source [32, 8] vs model [32, 6]" in out
    assert json.loads((run_b / "data_info.json").read_text())["num_classes"] == 6


@pytest.mark.slow
def test_import_weights_then_evaluate_and_fine_tune(monkeypatch, tmp_path, capsys):
    """An ImageNet ResNet-18 imported into a (full-width) SSAN smoke model: the run folder
    evaluates without a config, refuses training inside it, and seeds a fine-tuning run."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from torch_compat import import_torchvision

    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path / "data"))
    resnet = tmp_path / "resnet18.pth"
    torch.save(import_torchvision().models.resnet18().state_dict(), resnet)
    full_width = ["--config.model.backbone_width=1.0", "--config.model.lstm_hidden=512"]
    imported = tmp_path / "imported"
    argv = ["import-weights", "--kind", "torchvision_resnet", "--input", str(resnet)]
    argv += ["--config", "configs/ssan.py:smoke", "--workdir", str(imported), *full_width]
    assert cli.main(argv) == 0
    assert "evaluate with: reid-jax evaluate" in capsys.readouterr().out
    assert json.loads((imported / "import.json").read_text())["kind"] == "torchvision_resnet"
    assert cli.main(argv) == 2  # the folder is not new
    assert "already holds checkpoints" in capsys.readouterr().err

    assert cli.main(["evaluate", "--workdir", str(imported)]) == 0
    summary = json.loads((imported / "eval" / "metrics.json").read_text())
    assert summary["last"]["step"] == 0 and "sum" in summary["last"]["metrics"]

    train = ["train", "--config", "configs/ssan.py:smoke", *full_width]
    assert cli.main(train + ["--workdir", str(imported)]) == 2
    assert "holds imported weights" in capsys.readouterr().err
    run = tmp_path / "fine_tuned"
    assert cli.main(train + ["--workdir", str(run), f"--config.init_from={imported}"]) == 0
    out = capsys.readouterr().out
    # Everything loads but the ID classifiers: the import could not know the 8 identities.
    assert "new (kept from init)        0 arrays" in out
    assert "shape mismatches            6 arrays" in out and "classifier_global/kernel" in out


def test_prepare_of_a_missing_folder_prints_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    argv = ["prepare", "--dataset", "market1501", "--root", str(missing)]
    assert cli.main([*argv, "--tfds-dir", str(tmp_path / "tfds")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --root {missing}: no such folder"
