"""The Task protocol: what a method plugs into the one generic training loop.

A task is a module (e.g. `reid_jax.training.tasks.ssan`) defining the functions below; the
loop (`reid_jax.training.loop`) owns meshes, jit, optimizer construction, checkpoints, logs and
the schedule of evaluations, and calls the task for everything method-specific.

Call order in a run:
  1. `make_train_data(config, workdir, shard_index=, shard_count=)` -> (loader, TrainDataInfo)
  2. `create_model(config, info)` -> flax module
  3. `init_variables(model, rng, config)` -> {'params', 'batch_stats'?} (jitted by the loop)
  4. `loss_fn(model, params, batch_stats, batch, key, *, step, config, info)`
     -> (loss, (metrics, new batch_stats)): the objective of one (micro-)batch, pure. The
     shared skeleton `training/step.py` differentiates it (with gradient accumulation),
     applies the optimizer and the moving average; the loop jits the whole step with the
     state replicated, the batch split on 'data' and the state donated. `key` is already
     `fold_in(root, state.step)`; the task splits it by purpose. `metrics` are [] float32
     scalars, averaged per log interval.
     A task whose update is not one gradient step (e.g. an adversary with its own optimizer)
     defines `train_step(model, state, batch, key, tx=, config=, info=)` -> (state, metrics)
     instead, and the loop calls that.
  5. `evaluate(model, variables, config, workdir, mesh=, info=)` -> nested metrics dict
     (all processes call it; only process 0 may write files, under workdir/eval/).

Optional: `compiler_options(config, backend)` -> dict of XLA options for the jitted train step,
or None (SSAN uses it so that rematerialisation saves memory on XLA:CPU; `xla_options` adds
the platform's own); `selectable_metrics(config)`
-> the metric paths `evaluate` reports, so a wrong `eval.select_metric` fails before training.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import flax.linen as nn
import jax
from jax.sharding import Mesh


@dataclasses.dataclass(frozen=True)
class TrainDataInfo:
    """Facts about the training data the model and the schedule depend on.

    Attributes:
      num_examples: training examples in one epoch (all processes).
      steps_per_epoch: optimizer steps per epoch at the global batch size (drop-last).
      num_classes: training identities (size of the ID classifiers); 0 if unused.
      extras: task-specific facts (e.g. the vocabulary size), JSON-serialisable.
    """

    num_examples: int
    steps_per_epoch: int
    num_classes: int
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Task(Protocol):
    """Structural type of a task module (see the module docstring for the call order)."""

    def make_train_data(
        self, config: Any, workdir: str | os.PathLike, *, shard_index: int, shard_count: int
    ) -> tuple[Iterable[dict], TrainDataInfo]:
        """Returns this process's grain loader (checkpointable iterator) and data facts."""

    def create_model(self, config: Any, info: TrainDataInfo) -> nn.Module:
        """Unpacks `config.model` (and data facts such as num_classes) into a flax module."""

    def init_variables(self, model: nn.Module, rng: jax.Array, config: Any) -> dict[str, Any]:
        """Initialises the model variables from dummy inputs of the configured shapes."""

    def loss_fn(
        self,
        model: nn.Module,
        params: Any,
        batch_stats: Any,
        batch: dict[str, jax.Array],
        key: jax.Array,
        *,
        step: jax.Array,
        config: Any,
        info: TrainDataInfo,
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
        """The objective of one (micro-)batch: (loss, (metrics, new batch_stats))."""

    def evaluate(
        self,
        model: nn.Module,
        variables: dict[str, Any],
        config: Any,
        workdir: str | os.PathLike,
        *,
        mesh: Mesh,
        info: TrainDataInfo,
    ) -> dict[str, Any]:
        """Evaluates `variables` and returns (nested) metrics; writes pictures to workdir/eval."""
