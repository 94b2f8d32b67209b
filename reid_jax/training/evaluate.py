"""Evaluate a run folder's checkpoint (`reid-jax evaluate --workdir RUN`).

Builds only what evaluation needs: the config comes from the run's config.json (unless one is
given), the model's data-dependent sizes from data_info.json, and only the model variables are
read from the checkpoint (no optimizer, no training pipeline, no vocabulary rebuild).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax

from reid_jax import config_lib, sharding
from reid_jax.training import checkpoint, run_folder, run_setup
from reid_jax.training import logging as run_logging
from reid_jax.training.state import eval_variables


class NoCheckpointError(FileNotFoundError):
    """The run folder has no checkpoint to evaluate."""


def checkpoint_to_evaluate(workdir: Path, *, step: int | None, best: bool) -> Path:
    """The step folder `reid-jax evaluate` reads.

    Args:
      workdir: the run folder.
      step: a checkpoint step, or None for the latest.
      best: take the best evaluation's checkpoint (workdir/best) instead.

    Raises:
      NoCheckpointError: with one line naming the folder.
    """
    folder = workdir / (checkpoint.BEST_DIR if best else checkpoint.CHECKPOINT_DIR)
    steps = checkpoint.step_folders(folder)
    if step is not None:
        steps = [p for p in steps if int(p.name) == step]
    if not steps:
        which = f" at step {step}" if step is not None else ""
        raise NoCheckpointError(f"{folder}: no checkpoint{which} to evaluate")
    return steps[-1]


def evaluate_checkpoint(
    workdir: str | os.PathLike,
    config: Any | None = None,
    *,
    step: int | None = None,
    best: bool = False,
    task: Any = None,
) -> dict[str, Any]:
    """Restores a run's model variables and runs its task's evaluation (files under eval/).

    Args:
      workdir: run folder with checkpoints/ (and config.json, data_info.json).
      config: the config to use; the run's config.json when None.
      step: checkpoint step; the latest when None.
      best: evaluate workdir/best (the best evaluation so far) instead.
      task: task module; `TASKS[config.task]` when None.

    Returns:
      The task's metrics dict.

    Raises:
      NoCheckpointError: the folder has no such checkpoint (nothing is written).
      FileNotFoundError: no config given and the folder has no config.json.
    """
    workdir = Path(workdir)
    folder = checkpoint_to_evaluate(workdir, step=step, best=best)
    config = run_folder.load_config(workdir) if config is None else config
    config_lib.validate(config)
    with run_logging.process_log_file(workdir):
        return _evaluate(workdir, folder, config, task)


def _evaluate(workdir: Path, folder: Path, config: Any, task: Any) -> dict[str, Any]:
    """`evaluate_checkpoint` once the checkpoint is found and the config checked."""
    task = run_setup.resolve_task(config) if task is None else task
    run_setup.apply_matmul_precision(config)
    mesh = sharding.make_mesh(config.mesh)
    run_setup.check_batch_sizes(config, mesh)
    info = run_folder.load_data_info(workdir)
    if info is None:  # runs from before data_info.json: the data facts come from the loader
        _, info = task.make_train_data(
            config, workdir, shard_index=jax.process_index(), shard_count=jax.process_count()
        )
    model = task.create_model(config, info)
    saved = checkpoint.restore_variables(folder, sharding.replicated(mesh))
    variables = eval_variables(saved, use_ema=config.eval.use_ema)
    metrics, _ = run_setup.run_evaluation(
        task, model, variables, config, workdir, int(folder.name), mesh=mesh, info=info
    )
    return metrics
