"""The one training loop shared by every method (the method lives in a task module).

`train_and_evaluate(config, workdir)` builds the mesh, asks the task for data and model,
initialises or restores the train state (and the data iterator), runs the jitted step with
the state replicated and the batch split on 'data', logs, checkpoints, handles SIGTERM and
evaluates. Re-running the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from reid_jax import config_lib, multihost, sharding
from reid_jax.data import bad_images
from reid_jax.training import checkpoint, optim, run_folder
from reid_jax.training import logging as run_logging
from reid_jax.training.run_setup import (
    initial_variables,
    make_train_step,
    run_evaluation,
    setup_run,
)
from reid_jax.training.state import model_variables
from reid_jax.training.tasks.base import Task


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
    lrs = optim.group_learning_rates(
        config.optim, multipliers[-1], step=step - 1, steps_per_epoch=setup.info.steps_per_epoch
    )
    names = [k for k in host[0] if k not in ("lr_multiplier", bad_images.SKIPPED_METRIC)]
    means = {k: float(np.mean([m[k] for m in host])) for k in names}
    scalars = {
        **{f"train/{k}": v for k, v in means.items()},
        **{f"lr/{k}": v for k, v in lrs.items()},
        "train/images_per_second": images / seconds if images and seconds > 0 else 0.0,
    }
    if bad_images.SKIPPED_METRIC in host[0]:  # data.bad_images='skip': a count, not a mean
        skipped = sum(float(m[bad_images.SKIPPED_METRIC]) for m in host)
        scalars["data/skipped_images"] = skipped
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
    if start == 0:  # only `reid-jax import-weights` writes a step-0 checkpoint
        raise config_lib.ConfigError(
            "init_from",
            f"{workdir} holds imported weights, not a training run: train in a new --workdir "
            f"with --config.init_from={workdir}",
        )
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
        checkpoints/, best/, eval/ and logs/process_<i>.log (every process's log).
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
    with run_logging.process_log_file(workdir):
        manager = checkpoint.make_checkpoint_manager(workdir, config.checkpoint)
        try:
            start = _prepare_workdir(config, workdir, manager)
            setup = setup_run(config, workdir, task)
            if is_main:
                run_folder.write_data_info(workdir, setup.info)
            _check_select_metric(setup.task, config)
            if start is not None and start >= setup.total_steps:
                result = _finish_completed_run(setup, config, workdir, manager, start)
            else:
                result = _train(setup, config, workdir, manager, start)
        except BaseException:
            checkpoint.close_after_error(manager)
            raise
        manager.close()
        checkpoint.empty_deleted(manager.directory, idle=True)
        return result


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


def _drop_records_after(step: int, workdir: Path, select_metric: str, best_manager) -> None:
    """Removes what an earlier process logged or saved after `step`, the state the run
    continues from (metrics lines, evaluations, best/ checkpoints)."""
    if jax.process_index() == 0:
        run_logging.truncate_metrics(workdir, step)
        run_folder.truncate_history(workdir, step, select_metric)
    if best_manager is not None:  # every process: orbax deletes behind a global barrier
        for stale in [s for s in best_manager.all_steps() if s > step]:
            best_manager.delete(stale)


def _train(setup, config, workdir, manager, start) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    iterator = iter(setup.loader)
    select_metric = config.eval.select_metric
    best_manager = checkpoint.make_best_manager(workdir) if select_metric else None
    if start is None:
        variables, report = initial_variables(setup, config)
        if report is not None and is_main:
            print(report.summary(), flush=True)
        state = setup.make_state(variables)
        unlogged = []
    else:
        state = checkpoint.restore_checkpoint(manager, setup.target, iterator, start)
        unlogged = checkpoint.restore_unlogged_metrics(manager, start)
    # Also for a new run: one killed before its first checkpoint completed left metrics
    # lines (and maybe evaluations) that this run is about to write again.
    _drop_records_after(start or 0, workdir, select_metric, best_manager)
    if start is None:
        start = 0
        logging.info("new run: %d steps", setup.total_steps)
    else:  # logged after the clean-up: watchers (tools/fault_injection.py) rely on it
        logging.info("resumed from step %d of %d", start, setup.total_steps)
    # Made by a jitted function: device_put of a process-local key onto a mesh that spans
    # several processes is an error; a replicated jit output is fine everywhere.
    root_key = jax.jit(
        lambda: jax.random.fold_in(jax.random.key(config.seed), 1),
        out_shardings=sharding.replicated(setup.mesh),
    )()
    train_step = multihost.lockstep(
        make_train_step(
            setup.task,
            setup.model,
            setup.tx,
            config,
            setup.info,
            setup.mesh,
            setup.schedule,
            state_sharding=setup.state_sharding,
        ),
        "train_step",
    )
    writer = run_logging.MetricWriter(workdir, enabled=is_main)
    eval_every = int(config.eval.every_epochs) * setup.info.steps_per_epoch
    # The interval a resumed checkpoint fell into continues with its saved host metrics.
    pending, saved, log_due, stopped = list(unlogged), start, None, False
    tick, timed_images = time.perf_counter(), 0
    pbar = tqdm(
        total=setup.total_steps,
        initial=start,
        disable=not is_main,
        desc="train",
        dynamic_ncols=True,
    )

    def evaluate(step: int) -> dict[str, Any]:
        variables = sharding.gather_replicated(
            model_variables(state, use_ema=config.eval.use_ema), setup.mesh
        )
        metrics, summary = run_evaluation(
            setup.task, setup.model, variables, config, workdir, step,
            mesh=setup.mesh, info=setup.info, writer=writer,
        )  # fmt: skip
        is_best = summary.get("best", {}).get("step") == step  # known to process 0
        if jax.process_count() > 1:  # orbax saves collectively: every process must agree
            is_best = bool(multihost_utils.broadcast_one_to_all(np.asarray(is_best)))
        if best_manager is not None and is_best:
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
                if log_due is not None:
                    # The interval that ended at the previous step is logged only now, with
                    # this step already queued, so the device never waits for the host's
                    # fetch (and images/s counts compute, not dispatch).
                    host = _check_finite(pending[:-1], log_due)
                    now = time.perf_counter()
                    images = timed_images - config.train.batch_size
                    _log_interval(writer, pbar, host, log_due, setup, config, images, now - tick)
                    pending, tick, timed_images = pending[-1:], now, config.train.batch_size
                    log_due = None
                last = step == setup.total_steps
                if step % config.train.log_every_steps == 0 or last:
                    if last or save or evaluate_now or stop.requested:
                        host = _check_finite(pending, step)
                        now = time.perf_counter()
                        _log_interval(
                            writer, pbar, host, step, setup, config, timed_images, now - tick
                        )
                        pending, tick, timed_images = [], now, 0
                    else:
                        log_due = step
                elif save or evaluate_now:
                    # Never save or evaluate a non-finite state; the fetched metrics go into
                    # the checkpoint, so a resume logs this interval's mean unchanged.
                    pending = _check_finite(pending, step)
                if save:
                    checkpoint.save_checkpoint(manager, step, state, iterator, pending)
                    saved = step
                if stop.requested:
                    checkpoint.wait_for_saves(manager, step)
                    logging.warning("SIGTERM: saved checkpoint at step %d, stopping", step)
                    print(
                        f"SIGTERM received: checkpoint saved at step {step}; re-run the same "
                        "command to resume.",
                        flush=True,
                    )
                    stopped = True
                    break
                if evaluate_now:
                    evaluate(step)
        if stopped:  # (not stop.requested: a SIGTERM after the last step saves as usual)
            result = {}
        else:
            if saved != setup.total_steps:
                checkpoint.save_checkpoint(manager, setup.total_steps, state, iterator)
            checkpoint.wait_for_saves(manager, setup.total_steps)
            pbar.close()
            result = evaluate(setup.total_steps)
    except BaseException:
        # Closing flushes files: on a full disk that fails too, and must not replace the
        # error that says what happened (e.g. which checkpoint could not be written).
        pbar.close()
        run_logging.close_quietly(writer.close, "metric writer")
        if best_manager is not None:
            run_logging.close_quietly(best_manager.close, "best checkpoint manager")
        raise
    pbar.close()
    writer.close()
    if best_manager is not None:
        best_manager.close()
    return result
