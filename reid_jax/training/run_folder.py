"""The run folder as the source of truth: its config, data facts and evaluation summary.

config.json      the config the run trains with; a resume compares the new config with it
data_info.json   the `TrainDataInfo` of the run (the model's sizes that come from the data),
                 so evaluation builds the model without building the training pipeline
eval/history.jsonl  one line per evaluation; eval/metrics.json is derived from it:
                 {'last': {'step', 'metrics'}, 'best': {'step', 'metric', 'value', 'metrics'}}
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from reid_jax import config_lib
from reid_jax.training import logging as run_logging
from reid_jax.training.tasks.base import TrainDataInfo

CONFIG_FILE = "config.json"
DATA_INFO_FILE = "data_info.json"
EVAL_DIR = "eval"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"

# Fields a resumed run may change: they alter neither shapes, nor the data order, nor the
# schedule. Everything else must match the run's config.json. A name ending in '.' covers a
# section; other names cover the field and its sub-fields (init_from covers init_from_rules).
HARMLESS_FIELDS = (
    "train.log_every_steps",
    "eval.",
    "checkpoint.",
    "data.num_workers",
    # Changes a batch only where an image is unreadable, so a run stopped by one resumes
    # exactly with 'skip' (the batches before it decoded every image).
    "data.bad_images",
    "data.root",
    "data.tfds_dir",  # a prepared dataset gives the same records, images and order
    "mesh.distributed",
    "model.remat",
    "model.pretrained_trunk",
    "model.pretrained_text",
    "init_from",
)


class RunConfigMismatch(config_lib.ConfigError):
    """A resume with a config that changes shapes, data order or schedule."""

    def __init__(self, workdir: Path, differences: list[tuple[str, Any, Any]]):
        listed = "; ".join(
            f"{name}: {old!r} in the run, {new!r} now" for name, old, new in differences
        )
        message = (
            f"{workdir / CONFIG_FILE} was trained with another config, and a resume may not "
            f"change shapes, data order or schedule: {listed}. Use a new --workdir (to "
            f"fine-tune from this run: --config.init_from={workdir})"
        )
        super().__init__(differences[0][0], message)
        self.differences = differences


def config_as_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON data (tuples become lists), as written to config.json."""
    return json.loads(config.to_json_best_effort())


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every leaf that differs ('<absent>' if missing)."""
    old_leaves, new_leaves = dict(_leaves(old)), dict(_leaves(new))
    names = sorted(set(old_leaves) | set(new_leaves))
    missing = "<absent>"
    return [
        (name, old_leaves.get(name, missing), new_leaves.get(name, missing))
        for name in names
        if old_leaves.get(name, missing) != new_leaves.get(name, missing)
    ]


def is_harmless(field: str) -> bool:
    """Whether a resume may change `field` (see HARMLESS_FIELDS)."""
    return field.startswith(HARMLESS_FIELDS)


def check_resume_config(workdir: str | os.PathLike, config: Any) -> list[tuple[str, Any, Any]]:
    """Compares the config of a resume with the run's config.json.

    Args:
      workdir: the run folder (nothing is checked when it has no config.json).
      config: the new config.

    Returns:
      The harmless differences (to be noted).

    Raises:
      RunConfigMismatch: listing every other differing field with both values.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        return []
    differences = config_differences(json.loads(path.read_text()), config_as_dict(config))
    refused = [d for d in differences if not is_harmless(d[0])]
    if refused:
        raise RunConfigMismatch(Path(workdir), refused)
    return differences


def write_config(workdir: str | os.PathLike, config: Any) -> None:
    """Writes config.json atomically."""
    run_logging.write_json_atomic(Path(workdir) / CONFIG_FILE, config_as_dict(config))


# Config fields added after run folders were first written, with the value that reproduces
# the older behaviour: `load_config` fills them into an older config.json.
FIELDS_ADDED_LATER = {
    "model.matmul_precision": "default",
    "data.tfds_dir": "",
    "data.bad_images": "stop",
}


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's config from config.json, locked (so overrides of unknown fields fail);
    fields added since the run was written get their old-behaviour value
    (`FIELDS_ADDED_LATER`).

    Raises:
      FileNotFoundError: the folder has no config.json.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (is {workdir} a run folder?)")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    for name, default in FIELDS_ADDED_LATER.items():
        section, field = name.split(".")
        if field not in config[section]:  # a run folder from before the field existed
            config[section][field] = default
    config.lock()
    return config


def write_data_info(workdir: str | os.PathLike, info: TrainDataInfo) -> None:
    """Writes data_info.json atomically."""
    run_logging.write_json_atomic(Path(workdir) / DATA_INFO_FILE, dataclasses.asdict(info))


def load_data_info(workdir: str | os.PathLike) -> TrainDataInfo | None:
    """The run's TrainDataInfo, or None for runs that predate data_info.json."""
    path = Path(workdir) / DATA_INFO_FILE
    if not path.exists():
        return None
    return TrainDataInfo(**json.loads(path.read_text()))


def metric_value(metrics: Mapping[str, Any], path: str) -> float:
    """The value at a '/'-joined path of nested metrics, e.g. 'sum/R1'.

    Raises:
      KeyError: the path is not in the metrics (the message lists the available paths).
    """
    node: Any = metrics
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            available = sorted(name.replace(".", "/") for name, _ in _leaves(metrics))
            raise KeyError(f"config.eval.select_metric: '{path}' is not one of {available}")
        node = node[part]
    return float(node)


def read_history(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every evaluation record {'step', 'metrics'} of the run, in file order."""
    path = Path(workdir) / EVAL_DIR / HISTORY_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(history: list[dict[str, Any]], select_metric: str) -> dict[str, Any]:
    """eval/metrics.json content: the last evaluation (largest step, latest record) and, with a
    selection metric, the best one (first of equal values)."""
    if not history:
        return {}
    last = max(enumerate(history), key=lambda item: (item[1]["step"], item[0]))[1]
    summary: dict[str, Any] = {"last": last}
    if select_metric:
        best = None
        for record in history:
            value = metric_value(record["metrics"], select_metric)
            if best is None or value > best["value"]:
                best = {**record, "metric": select_metric, "value": value}
        summary["best"] = best
    return summary


def record_evaluation(
    workdir: str | os.PathLike, step: int, metrics: Mapping[str, Any], select_metric: str
) -> dict[str, Any]:
    """Appends an evaluation to history.jsonl and rewrites metrics.json (atomically).

    Returns:
      The new summary (see `summarize`).
    """
    eval_dir = Path(workdir) / EVAL_DIR
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / HISTORY_FILE, "a") as f:
        f.write(json.dumps({"step": int(step), "metrics": metrics}) + "\n")
    summary = summarize(read_history(workdir), select_metric)
    run_logging.write_json_atomic(eval_dir / METRICS_FILE, summary)
    return summary


def truncate_history(workdir: str | os.PathLike, last_step: int, select_metric: str) -> None:
    """Drops evaluations after `last_step` (a resumed run re-does them) and rewrites the
    summary."""
    history = read_history(workdir)
    kept = [r for r in history if r["step"] <= last_step]
    if len(kept) == len(history):
        return
    eval_dir = Path(workdir) / EVAL_DIR
    tmp = eval_dir / f".{HISTORY_FILE}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, eval_dir / HISTORY_FILE)
    run_logging.write_json_atomic(eval_dir / METRICS_FILE, summarize(kept, select_metric))
