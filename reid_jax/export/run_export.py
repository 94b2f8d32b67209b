"""`reid-jax export --workdir RUN --out BUNDLE`: a run folder's checkpoint -> inference bundle.

The config and data facts come from the run folder (config.json, data_info.json), the model
variables from its latest checkpoint (or best/, or a given step; the moving average when the
run evaluates it), the encoders from the task's `export_encoders`, and the vocabulary files
(vocab.txt, vocab.json, *.model) from the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from reid_jax import config_lib
from reid_jax.export.bundle import write_bundle
from reid_jax.training import checkpoint, run_folder, run_setup
from reid_jax.training.evaluate import checkpoint_to_evaluate
from reid_jax.training.state import eval_variables

VOCABULARY_PATTERNS = ("vocab.txt", "vocab.json", "*.model", "*.vocab")


class NotExportableError(ValueError):
    """The run's task has no exported encoders yet."""


def export_run(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    step: int | None = None,
    best: bool = False,
    onnx: bool = False,
) -> Path:
    """Writes the bundle of a run's checkpoint (with `onnx`, also its image encoders as
    checked ONNX files); returns its path.

    Raises:
      NoCheckpointError: no such checkpoint.
      NotExportableError: the task defines no `export_encoders`.
      FileExistsError: `out` exists.
      OnnxNotInstalledError: `onnx` without the `onnx` extra.
    """
    workdir = Path(workdir)
    folder = checkpoint_to_evaluate(workdir, step=step, best=best)
    config = run_folder.load_config(workdir)
    config_lib.validate(config)
    task = run_setup.resolve_task(config)
    if not hasattr(task, "export_encoders"):
        raise NotExportableError(f"task '{config.task}' has no exported encoders yet")
    info = run_folder.load_data_info(workdir)
    if info is None:
        raise FileNotFoundError(f"{workdir}: no data_info.json (a run from an older version)")
    model = task.create_model(config, info)
    variables = eval_variables(checkpoint.restore_variables(folder), use_ema=config.eval.use_ema)
    files = sorted({p for pattern in VOCABULARY_PATTERNS for p in workdir.glob(pattern)})
    return write_task_bundle(out, task, model, variables, config, info, files=files, onnx=onnx)


def write_task_bundle(
    out: str | os.PathLike,
    task: Any,
    model: Any,
    variables: dict[str, Any],
    config: Any,
    info: Any,
    *,
    files: Sequence[str | os.PathLike] = (),
    onnx: bool = False,
) -> Path:
    """The bundle of a task's model: its `export_encoders` and `export_preprocessing`, the
    variables (empty collections left out) and the config as config.json holds it; `onnx`
    as in `write_bundle`."""
    return write_bundle(
        out,
        task=config.task,
        encoders=task.export_encoders(model, config, info),
        variables={name: tree for name, tree in variables.items() if jax.tree.leaves(tree)},
        config=run_folder.config_as_dict(config),
        preprocessing=task.export_preprocessing(config, info),
        files=files,
        onnx=onnx,
    )
