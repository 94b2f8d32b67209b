"""The one training loop shared by every method (the method lives in a task module).

`train_and_evaluate(config, workdir)` builds the mesh, asks the task for data and model,
initialises or restores the train state (and the data iterator), runs the jitted step with
the state replicated and the batch split on 'data', logs, checkpoints, handles SIGTERM and
evaluates. Re-running the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
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
from reid_jax.training import checkpoint, init_from, optim, run_folder
from reid_jax.training import logging as run_logging
from reid_jax.training import step as step_lib
from reid_jax.training.state import TrainState, create_train_state, model_variables
from reid_jax.training.tasks.base import Task, TrainDataInfo


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
      init_variables: jitted rng -> fresh model variables, replicated.
      make_state: jitted variables -> step-0 TrainState (fresh optimizer state), replicated.
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
    init_variables: Any
    make_state: Any
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
    check_batch_sizes(config, mesh)
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

    def make_state(variables):
        return create_train_state(variables, tx, ema=config.train.ema_decay > 0)

    replicated = sharding.replicated(mesh)
    target = checkpoint.abstract_state(jax.eval_shape(make_state, variable_shapes), replicated)
    return RunSetup(
        task,
        mesh,
        loader,
        info,
        model,
        tx,
        schedule,
        total_steps,
        jax.jit(
            functools.partial(task.init_variables, model, config=config), out_shardings=replicated
        ),
        jax.jit(make_state, out_shardings=replicated),
        target,
    )


def check_batch_sizes(config: Any, mesh: jax.sharding.Mesh) -> None:
    """Training, micro- and evaluation batches must split evenly over the data shards and
    processes; checked before any data is read.

    Raises:
      ConfigError: naming the field.
    """
    shards = sharding.data_parallel_size(mesh)
    micro_batch = config.train.batch_size // config.train.grad_accum_steps
    checks = [
        ("train.batch_size", config.train.batch_size),
        ("train.grad_accum_steps", micro_batch),
        ("eval.batch_size", config.eval.batch_size if "batch_size" in config.eval else shards),
    ]
    for field, size in checks:
        for parts, what in ((shards, "data shards"), (jax.process_count(), "processes")):
            if size % parts:
                raise config_lib.ConfigError(
                    field, f"a batch of {size} is not divisible by the {parts} {what}"
                )


def initial_variables(setup: RunSetup, config: Any) -> tuple[Any, init_from.LoadReport | None]:
    """Step-0 model variables: the fresh initialisation, with `config.init_from` loaded over it.

    Returns:
      (variables replicated on the mesh, load report or None without init_from).
    """
    variables = setup.init_variables(jax.random.key(config.seed))
    if not config.init_from:
        return variables, None
    loaded, report = init_from.load_initial_variables(jax.device_get(variables), config)
    return sharding.replicate(loaded, setup.mesh), report


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

    batch_sharding = sharding.batch_sharding(mesh)

    def step(state: TrainState, batch: dict[str, jax.Array], root_key: jax.Array):
        key = jax.random.fold_in(root_key, state.step)
        if hasattr(task, "train_step"):  # a task with its own update (several optimizers)
            new_state, metrics = task.train_step(
                model, state, batch, key, tx=tx, config=config, info=info
            )
        else:
            new_state, metrics = step_lib.gradient_step(
                task,
                model,
                state,
                batch,
                key,
                tx=tx,
                config=config,
                info=info,
                constrain=lambda tree: jax.lax.with_sharding_constraint(tree, batch_sharding),
            )
        if schedule is not None:
            metrics = dict(metrics, lr_multiplier=schedule(state.step))
        return new_state, metrics

    replicated = sharding.replicated(mesh)
    # Optional task hook: XLA options the step needs (e.g. for remat to save memory on CPU).
    task_compiler_options = getattr(task, "compiler_options", None)
    return jax.jit(
        step,
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
        compiler_options=task_compiler_options(config) if task_compiler_options else None,
    )


def run_evaluation(
    task: Task,
    model: Any,
    variables: Any,
    config: Any,
    workdir: str | os.PathLike,
    step: int,
    *,
    mesh: jax.sharding.Mesh,
    info: TrainDataInfo,
    writer: run_logging.MetricWriter | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs the task's evaluation and records it in workdir/eval/ (process 0).

    Args:
      task: the task module.
      model: its flax module.
      variables: model variables to evaluate.
      config: the config.
      workdir: run folder.
      step: the step of `variables` (written with the results).
      mesh: the device mesh.
      info: training data facts.
      writer: also logs flattened results to metrics.jsonl/TensorBoard when given.

    Returns:
      (the task's metrics dict, the run's evaluation summary {'last', 'best'}).
    """
    metrics = task.evaluate(model, variables, config, workdir, mesh=mesh, info=info)
    summary: dict[str, Any] = {}
    if jax.process_index() == 0:
        summary = run_folder.record_evaluation(workdir, step, metrics, config.eval.select_metric)
        if writer is not None:
            writer.write(step, _flatten(metrics, "eval/"), kind="eval")
    return metrics, summary


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


def _check_finite(pending: list[Any], last_step: int) -> list[dict[str, Any]]:
    """Fetches the metrics of the steps ending at `last_step` and stops on NaN/Inf.

    Every step's metrics include its loss and gradient norm, so a non-finite update is caught
    here before the state it produced is saved or evaluated.
    """
    host = jax.device_get(pending)
    first = last_step - len(host) + 1
    for offset, metrics in enumerate(host):
        run_logging.check_finite(first + offset, metrics)
    return host


def _log_interval(writer, pbar, host, step, setup, config, images, seconds) -> None:
    multipliers = [float(m["lr_multiplier"]) for m in host]
    lrs = optim.group_learning_rates(config.optim, multipliers[-1])
    names = [k for k in host[0] if k != "lr_multiplier"]
    means = {k: float(np.mean([m[k] for m in host])) for k in names}
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


def _prepare_workdir(config: Any, workdir: Path, manager: Any) -> int | None:
    """Checks a resume against config.json and (process 0) writes the config.

    Returns:
      The step to resume from, or None for a new run.
    """
    start = manager.latest_step()
    is_main = jax.process_index() == 0
    if start is not None:
        changed = run_folder.check_resume_config(workdir, config)
        if changed and is_main:
            print(
                "resuming with changed harmless fields: "
                + "; ".join(f"{n}: {a!r} -> {b!r}" for n, a, b in changed),
                flush=True,
            )
    if is_main:
        run_folder.write_config(workdir, config)
    return start


def _finish_completed_run(setup, config, workdir, manager, start) -> dict[str, Any]:
    """A resume whose checkpoint is at or past total_steps: says so, trains nothing, and
    evaluates only if that checkpoint's evaluation is missing."""
    message = (
        f"checkpoint at step {start} is at or past total_steps {setup.total_steps}: the run "
        f"is finished, nothing to train"
    )
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)
    summary = run_folder.summarize(run_folder.read_history(workdir), config.eval.select_metric)
    if summary and summary["last"]["step"] == start:
        return summary["last"]["metrics"]
    state = checkpoint.restore_checkpoint(manager, setup.target, None, start)
    variables = model_variables(state, use_ema=config.eval.use_ema)
    return run_evaluation(
        setup.task, setup.model, variables, config, workdir, start, mesh=setup.mesh, info=setup.info
    )[0]


def train_and_evaluate(
    config: Any, workdir: str | os.PathLike, task: Task | None = None
) -> dict[str, Any]:
    """Trains (or resumes) a run and evaluates it at the end.

    Args:
      config: the full config (validated here).
      workdir: run folder (created); holds config.json, data_info.json, metrics.jsonl,
        checkpoints/, best/, eval/.
      task: task module; `TASKS[config.task]` when None.

    Returns:
      The final evaluation metrics ({} if the run was stopped by SIGTERM).

    Raises:
      ConfigError: invalid config, or a resume that changes shapes, data order or schedule.
    """
    config_lib.validate(config)
    run_logging.quiet_library_logs()
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    manager = checkpoint.make_checkpoint_manager(workdir, config.checkpoint)
    try:
        start = _prepare_workdir(config, workdir, manager)
        setup = setup_run(config, workdir, task)
        if is_main:
            run_folder.write_data_info(workdir, setup.info)
        _check_select_metric(setup.task, config)
        if start is not None and start >= setup.total_steps:
            return _finish_completed_run(setup, config, workdir, manager, start)
        return _train(setup, config, workdir, manager, start)
    finally:
        manager.close()


def _check_select_metric(task: Task, config: Any) -> None:
    """`eval.select_metric` must name a metric the task reports (checked before training)."""
    names = getattr(task, "selectable_metrics", None)
    if config.eval.select_metric and names is not None:
        allowed = names(config)
        if config.eval.select_metric not in allowed:
            raise config_lib.ConfigError(
                "eval.select_metric",
                f"'{config.eval.select_metric}' is not reported, choose from {sorted(allowed)}",
            )


def _train(setup, config, workdir, manager, start) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    iterator = iter(setup.loader)
    select_metric = config.eval.select_metric
    best_manager = checkpoint.make_best_manager(workdir) if select_metric else None
    if start is None:
        start = 0
        variables, report = initial_variables(setup, config)
        if report is not None and is_main:
            print(report.summary(), flush=True)
        state = setup.make_state(variables)
    else:
        state = checkpoint.restore_checkpoint(manager, setup.target, iterator, start)
        if is_main:
            run_logging.truncate_metrics(workdir, start)
            run_folder.truncate_history(workdir, start, select_metric)
            if best_manager is not None:
                for stale in [s for s in best_manager.all_steps() if s > start]:
                    best_manager.delete(stale)
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
    eval_every = int(config.eval.every_epochs) * setup.info.steps_per_epoch
    pending, saved = [], start
    tick, timed_images = time.perf_counter(), 0
    pbar = tqdm(
        total=setup.total_steps,
        initial=start,
        disable=not is_main,
        desc="train",
        dynamic_ncols=True,
    )

    def evaluate(step: int) -> dict[str, Any]:
        variables = model_variables(state, use_ema=config.eval.use_ema)
        metrics, summary = run_evaluation(
            setup.task, setup.model, variables, config, workdir, step,
            mesh=setup.mesh, info=setup.info, writer=writer,
        )  # fmt: skip
        best_step = summary.get("best", {}).get("step")
        if best_manager is not None and is_main and best_step == step:
            checkpoint.save_best(best_manager, step, state)
        return metrics

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
                # Multi-host: orbax's preemption sync point makes every process stop at the
                # same step; single host: SIGTERM sets the flag.
                stop.requested = stop.requested or (
                    jax.process_count() > 1 and manager.reached_preemption(step)
                )
                save = stop.requested or step % config.checkpoint.every_steps == 0
                evaluate_now = eval_every and step % eval_every == 0 and step != setup.total_steps
                if step % config.train.log_every_steps == 0 or step == setup.total_steps:
                    # Waits for the interval's steps, so images/s counts compute, not dispatch.
                    host = _check_finite(pending, step)
                    now = time.perf_counter()
                    _log_interval(writer, pbar, host, step, setup, config, timed_images, now - tick)
                    pending, tick, timed_images = [], now, 0
                elif save or evaluate_now:
                    _check_finite(pending, step)  # never save or evaluate a non-finite state
                if save:
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
                if evaluate_now:
                    evaluate(step)
        if saved != setup.total_steps:
            checkpoint.save_checkpoint(manager, setup.total_steps, state, iterator)
        manager.wait_until_finished()
        pbar.close()
        return evaluate(setup.total_steps)
    finally:
        pbar.close()
        writer.close()
        if best_manager is not None:
            best_manager.close()
