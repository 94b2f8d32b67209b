"""The one training loop shared by every method (the method lives in a task module).

`train_and_evaluate(config, workdir)` builds the mesh, asks the task for data and model,
initialises or restores the train state (and the data iterator), runs the jitted step with
the state replicated and the batch split on 'data', logs, checkpoints, handles SIGTERM and
evaluates. Re-running the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from reid_jax import config_lib, sharding
from reid_jax.training import checkpoint, optim
from reid_jax.training import logging as run_logging
from reid_jax.training.state import TrainState, create_train_state, model_variables
from reid_jax.training.tasks.base import Task, TrainDataInfo

EVAL_DIR = "eval"


@dataclasses.dataclass
class RunSetup:
    """Everything built once per run before the first step.

    Attributes:
      task: the task module.
      mesh: device mesh.
      loader: this process's training loader (iterable of host batches).
      info: training data facts.
      model: the flax module.
      tx: optimizer.
      schedule: lr multiplier function (for logging).
      total_steps: steps of the whole run.
      init_state: jitted rng -> TrainState with replicated outputs.
      target: abstract TrainState (shapes, dtypes, replicated shardings) for restores.
    """

    task: Task
    mesh: jax.sharding.Mesh
    loader: Iterable[dict[str, np.ndarray]]
    info: TrainDataInfo
    model: Any
    tx: optax.GradientTransformation
    schedule: optim.Schedule
    total_steps: int
    init_state: Any
    target: Any


def resolve_task(config: Any) -> Task:
    """The task module registered under `config.task` (explicit dict, no import strings)."""
    from reid_jax.training.tasks import TASKS  # deferred: task modules pull in their models

    if config.task not in TASKS:
        raise config_lib.ConfigError(
            "task", f"unknown task '{config.task}', choose from {sorted(TASKS)}"
        )
    return TASKS[config.task]


def setup_run(config: Any, workdir: str | os.PathLike, task: Task | None = None) -> RunSetup:
    """Builds mesh, data, model, optimizer and the state initialiser.

    Args:
      config: validated config.
      workdir: run folder.
      task: task module; `TASKS[config.task]` when None (tests pass stand-ins).

    Returns:
      A RunSetup.
    """
    task = resolve_task(config) if task is None else task
    mesh = sharding.make_mesh(config.mesh)
    shards = sharding.data_parallel_size(mesh)
    if config.train.batch_size % shards or config.train.batch_size % jax.process_count():
        raise config_lib.ConfigError(
            "train.batch_size",
            f"{config.train.batch_size} is not divisible by the {shards} data shards",
        )
    loader, info = task.make_train_data(
        config, workdir, shard_index=jax.process_index(), shard_count=jax.process_count()
    )
    model = task.create_model(config, info)
    total_steps = int(config.train.num_steps) or int(config.train.num_epochs) * info.steps_per_epoch
    rng = jax.random.key(config.seed)
    variable_shapes = jax.eval_shape(
        functools.partial(task.init_variables, model, config=config), rng
    )
    tx = optim.make_optimizer(
        config.optim,
        variable_shapes["params"],
        steps_per_epoch=info.steps_per_epoch,
        total_steps=total_steps,
    )
    schedule = optim.make_schedule(
        config.optim, steps_per_epoch=info.steps_per_epoch, total_steps=total_steps
    )

    def init(rng):
        return create_train_state(task.init_variables(model, rng, config=config), tx)

    replicated = sharding.replicated(mesh)
    target = checkpoint.abstract_state(jax.eval_shape(init, rng), replicated)
    init_state = jax.jit(init, out_shardings=replicated)
    return RunSetup(task, mesh, loader, info, model, tx, schedule, total_steps, init_state, target)


def make_train_step(
    task: Task,
    model: Any,
    tx: optax.GradientTransformation,
    config: Any,
    info: TrainDataInfo,
    mesh: jax.sharding.Mesh,
    schedule: optim.Schedule | None = None,
):
    """Jits the task's step: state replicated and donated, batch split on 'data'.

    Args:
      task: the task module.
      model: its flax module.
      tx: the optimizer.
      config: the config (static inside the step).
      info: data facts.
      mesh: device mesh.
      schedule: if given, metrics also carry 'lr_multiplier' = schedule(step) (computed on
        the device, so logging the lr costs no host-side work).

    Returns:
      step(state, batch, root_key) -> (state, metrics), where the task sees the key
      `fold_in(root_key, state.step)`.
    """

    def step(state: TrainState, batch: dict[str, jax.Array], root_key: jax.Array):
        key = jax.random.fold_in(root_key, state.step)
        new_state, metrics = task.train_step(
            model, state, batch, key, tx=tx, config=config, info=info
        )
        if schedule is not None:
            metrics = dict(metrics, lr_multiplier=schedule(state.step))
        return new_state, metrics

    replicated = sharding.replicated(mesh)
    # Optional task hook: XLA options the step needs (e.g. for remat to save memory on CPU).
    task_compiler_options = getattr(task, "compiler_options", None)
    return jax.jit(
        step,
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
        compiler_options=task_compiler_options(config) if task_compiler_options else None,
    )


def run_evaluation(
    setup: RunSetup,
    state: TrainState,
    config: Any,
    workdir: str | os.PathLike,
    step: int,
    writer: run_logging.MetricWriter | None = None,
) -> dict[str, Any]:
    """Runs the task's evaluation and records it in workdir/eval/ (process 0).

    Args:
      setup: the run.
      state: train state to evaluate.
      config: the config.
      workdir: run folder.
      step: the step of `state` (written with the results).
      writer: also logs flattened results to metrics.jsonl/TensorBoard when given.

    Returns:
      The task's metrics dict.
    """
    metrics = setup.task.evaluate(
        setup.model, model_variables(state), config, workdir, mesh=setup.mesh, info=setup.info
    )
    if jax.process_index() == 0:
        eval_dir = Path(workdir) / EVAL_DIR
        run_logging.write_json_atomic(eval_dir / "metrics.json", {"step": step, "metrics": metrics})
        with open(eval_dir / "history.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "metrics": metrics}) + "\n")
        if writer is not None:
            writer.write(step, _flatten(metrics, "eval/"), kind="eval")
    return metrics


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, float]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = float(value)
    return flat


class _StopFlag:
    """Turns SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _log_interval(writer, pbar, pending, step, setup, config, images, seconds) -> None:
    host = jax.device_get(pending)  # the only device->host transfer per log interval
    first = step - len(host) + 1
    for offset, metrics in enumerate(host):
        run_logging.check_finite(first + offset, metrics)
    multipliers = [float(m.pop("lr_multiplier")) for m in host]
    lrs = optim.group_learning_rates(config.optim, multipliers[-1])
    means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    scalars = {
        **{f"train/{k}": v for k, v in means.items()},
        **{f"lr/{k}": v for k, v in lrs.items()},
        "train/images_per_second": images / seconds if images and seconds > 0 else 0.0,
    }
    writer.write(step, scalars, epoch=(step - 1) // setup.info.steps_per_epoch)
    pbar.set_postfix(
        loss=f"{means.get('loss', float('nan')):.4f}",
        img_s=f"{scalars['train/images_per_second']:.1f}",
        refresh=False,
    )


def _finished_evaluation(workdir: Path, total_steps: int) -> dict[str, Any] | None:
    """The final evaluation of a run that already completed, else None."""
    path = workdir / EVAL_DIR / "metrics.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record["metrics"] if record["step"] == total_steps else None


def train_and_evaluate(
    config: Any, workdir: str | os.PathLike, task: Task | None = None
) -> dict[str, Any]:
    """Trains (or resumes) a run and evaluates it at the end.

    Args:
      config: the full config (validated here).
      workdir: run folder (created); holds config.json, metrics.jsonl, checkpoints/, eval/.
      task: task module; `TASKS[config.task]` when None.

    Returns:
      The final evaluation metrics ({} if the run was stopped by SIGTERM).
    """
    config_lib.validate(config)
    run_logging.quiet_library_logs()
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        run_logging.write_json_atomic(
            workdir / "config.json", json.loads(config.to_json_best_effort())
        )
    setup = setup_run(config, workdir, task)
    manager = checkpoint.make_checkpoint_manager(workdir, config.checkpoint)
    iterator = iter(setup.loader)
    start = manager.latest_step()
    finished = _finished_evaluation(workdir, setup.total_steps)
    if start == setup.total_steps and finished is not None:
        logging.info("run already finished at step %d; evaluation in %s", start, EVAL_DIR)
        manager.close()
        return finished
    if start is None:
        start, state = 0, setup.init_state(jax.random.key(config.seed))
    else:
        state = checkpoint.restore_checkpoint(manager, setup.target, iterator, start)
        if is_main:
            run_logging.truncate_metrics(workdir, start)
        logging.info("resumed from step %d of %d", start, setup.total_steps)
    # Made by a jitted function: device_put of a process-local key onto a mesh that spans
    # several processes is an error; a replicated jit output is fine everywhere.
    root_key = jax.jit(
        lambda: jax.random.fold_in(jax.random.key(config.seed), 1),
        out_shardings=sharding.replicated(setup.mesh),
    )()
    train_step = make_train_step(
        setup.task, setup.model, setup.tx, config, setup.info, setup.mesh, setup.schedule
    )
    writer = run_logging.MetricWriter(workdir, enabled=is_main)
    steps_per_epoch = setup.info.steps_per_epoch
    eval_every = int(config.eval.every_epochs) * steps_per_epoch
    pending, saved = [], start
    tick, timed_images = time.perf_counter(), 0
    pbar = tqdm(
        total=setup.total_steps,
        initial=start,
        disable=not is_main,
        desc="train",
        dynamic_ncols=True,
    )
    try:
        with _StopFlag() as stop:
            for step in range(start + 1, setup.total_steps + 1):
                batch = sharding.host_batch_to_global(next(iterator), setup.mesh)
                state, metrics = train_step(state, batch, root_key)
                pending.append(metrics)
                pbar.update(1)
                timed_images += config.train.batch_size
                if step == start + 1:  # one sync so that images/s leaves out compilation
                    jax.block_until_ready(metrics)
                    tick, timed_images = time.perf_counter(), 0
                if step % config.train.log_every_steps == 0 or step == setup.total_steps:
                    # Wait for the interval's steps, so images/s counts compute, not dispatch.
                    jax.block_until_ready(pending)
                    now = time.perf_counter()
                    _log_interval(
                        writer, pbar, pending, step, setup, config, timed_images, now - tick
                    )
                    pending, tick, timed_images = [], now, 0
                # Multi-host: orbax's preemption sync point makes every process stop at the
                # same step; single host: SIGTERM sets the flag.
                stop.requested = stop.requested or (
                    jax.process_count() > 1 and manager.reached_preemption(step)
                )
                if stop.requested or step % config.checkpoint.every_steps == 0:
                    checkpoint.save_checkpoint(manager, step, state, iterator)
                    saved = step
                if stop.requested:
                    manager.wait_until_finished()
                    logging.warning("SIGTERM: saved checkpoint at step %d, stopping", step)
                    print(
                        f"SIGTERM received: checkpoint saved at step {step}; re-run the same "
                        "command to resume.",
                        flush=True,
                    )
                    return {}
                if eval_every and step % eval_every == 0 and step != setup.total_steps:
                    run_evaluation(setup, state, config, workdir, step, writer)
        if saved != setup.total_steps:
            checkpoint.save_checkpoint(manager, setup.total_steps, state, iterator)
        manager.wait_until_finished()
        pbar.close()
        return run_evaluation(setup, state, config, workdir, setup.total_steps, writer)
    finally:
        pbar.close()
        writer.close()
        manager.close()
