"""What a run builds before its first step, shared by training and evaluation: the task, the
mesh, the data facts, the model, the optimizer, the initial variables (with `init_from`), the
jitted train step, and the evaluation that records results in the run folder.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from reid_jax import config_lib, sharding
from reid_jax.data import bad_images, device_images
from reid_jax.training import checkpoint, init_from, optim, run_folder, xla_options
from reid_jax.training import logging as run_logging
from reid_jax.training import step as step_lib
from reid_jax.training.state import TrainState, create_train_state
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
      make_state: jitted variables -> step-0 TrainState (fresh optimizer state), laid out
        as `state_sharding` says.
      target: abstract TrainState (shapes, dtypes, shardings) for restores.
      state_sharding: the TrainState's shardings (`sharding.state_sharding`: replicated, or
        split over an 'fsdp' mesh axis).
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
    state_sharding: Any


def resolve_task(config: Any) -> Task:
    """The task module registered under `config.task` (explicit dict, no import strings)."""
    from reid_jax.training.tasks import TASKS  # deferred: task modules pull in their models

    if config.task not in TASKS:
        raise config_lib.ConfigError(
            "task", f"unknown task '{config.task}', choose from {sorted(TASKS)}"
        )
    return TASKS[config.task]


def apply_matmul_precision(config: Any) -> None:
    """Sets the process's default precision of float32 matmuls and convolutions from
    `model.matmul_precision` ('default' leaves the backend's choice: TF32 on NVIDIA Ampere and
    newer GPUs, bfloat16 passes on TPU; 'high'; 'highest' = full float32)."""
    value = config.model.matmul_precision
    jax.config.update("jax_default_matmul_precision", None if value == "default" else value)


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
    apply_matmul_precision(config)
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
    state_shapes = jax.eval_shape(make_state, variable_shapes)
    state_sharding = sharding.state_sharding(state_shapes, mesh)
    target = checkpoint.abstract_state(state_shapes, state_sharding)
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
        jax.jit(make_state, out_shardings=state_sharding),
        target,
        state_sharding,
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
    """Step-0 model variables: the fresh initialisation, with the task's pretrained parts
    (`config.model.pretrained_trunk`, or a task's own `load_pretrained` hook such as APTM's
    `model.pretrained_text`) and then `config.init_from` loaded over it.

    Returns:
      (variables replicated on the mesh, init_from load report or None without init_from).
    """
    variables = setup.init_variables(jax.random.key(config.seed))
    # Tasks with a ResNet trunk name where it goes (and have config.model.pretrained_trunk).
    prefixes = getattr(setup.task, "trunk_prefixes", None)
    trunk = config.model.pretrained_trunk if prefixes is not None else ""
    if prefixes is not None and not trunk and config.data.dataset != "embedded":
        _say(
            "warning: config.model.pretrained_trunk is empty: the trunk trains from scratch and "
            "results will be below the papers (which start from ImageNet weights)"
        )
    load_pretrained = getattr(setup.task, "load_pretrained", None)
    wants_pretrained = load_pretrained is not None and setup.task.has_pretrained(config)
    if not trunk and not wants_pretrained and not config.init_from:
        return variables, None
    variables = jax.device_get(variables)
    if trunk:
        variables, loaded = init_from.load_pretrained_trunk(variables, trunk, prefixes(config))
        _say(f"pretrained_trunk {trunk}: loaded {len(loaded)} arrays into {prefixes(config)}")
    if wants_pretrained:
        variables, messages = load_pretrained(variables, config)
        for message in messages:
            _say(message)
    report = None
    if config.init_from:
        variables, report = init_from.load_initial_variables(variables, config)
    return sharding.replicate(variables, setup.mesh), report


def _say(message: str) -> None:
    """One line on stdout (process 0) and in the log."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


def make_train_step(
    task: Task,
    model: Any,
    tx: optax.GradientTransformation,
    config: Any,
    info: TrainDataInfo,
    mesh: jax.sharding.Mesh,
    schedule: optim.Schedule | None = None,
    state_sharding: Any = None,
):
    """Jits the task's step: state laid out by `state_sharding` (replicated when None) and
    donated, batch split on 'data' (and 'fsdp').

    Args:
      task: the task module.
      model: its flax module.
      tx: the optimizer.
      config: the config (static inside the step).
      info: data facts.
      mesh: device mesh.
      schedule: if given, metrics also carry 'lr_multiplier' = schedule(step) (computed on
        the device, so logging the lr costs no host-side work).
      state_sharding: the TrainState's shardings (`RunSetup.state_sharding`).

    Returns:
      step(state, batch, root_key) -> (state, metrics), where the task sees the key
      `fold_in(root_key, state.step)`; a batch with the 'skipped' field (data.bad_images=
      'skip') adds the metric 'skipped_images', the number of substituted examples.
    """

    batch_sharding = sharding.batch_sharding(mesh)

    def step(state: TrainState, batch: dict[str, jax.Array], root_key: jax.Array):
        # data.bad_images='skip': which examples stand in for an unreadable image; counted
        # here, over the global batch, and kept away from the task.
        batch = dict(batch)
        skipped = batch.pop(bad_images.SKIPPED_FIELD, None)
        batch = device_images.prepare_batch(batch, task, config)
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
        if skipped is not None:
            count = jnp.sum(skipped).astype(jnp.float32)
            metrics = dict(metrics, **{bad_images.SKIPPED_METRIC: count})
        return new_state, metrics

    replicated = sharding.replicated(mesh)
    state_sharding = replicated if state_sharding is None else state_sharding
    return jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
        compiler_options=xla_options.train_step_options(task, config),
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
