"""Evaluation drivers: sharded feature extraction for tasks, and checkpoint evaluation.

`extract_features` runs a jitted encoder over padded, masked batches with the batch split on
'data' and returns host arrays of the valid rows. `evaluate_checkpoint(config, workdir)`
restores the latest checkpoint of a run and runs its task's evaluation (`reid-jax evaluate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from reid_jax import config_lib, sharding
from reid_jax.training import checkpoint, loop


def make_sharded_encoder(
    encode: Callable[[Any, dict[str, jax.Array]], Any], mesh: jax.sharding.Mesh
) -> Callable:
    """Jits `encode(variables, batch)` with variables replicated and the batch split on 'data'.

    Args:
      encode: pure function of (variables, batch dict) -> pytree of [b, ...] arrays.
      mesh: the device mesh.

    Returns:
      The jitted function; outputs are replicated (readable on every process).
    """
    replicated = sharding.replicated(mesh)
    return jax.jit(
        encode, in_shardings=(replicated, sharding.batch_sharding(mesh)), out_shardings=replicated
    )


def _process_slice(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous share of a full (global) host batch."""
    index, count = jax.process_index(), jax.process_count()
    size = len(next(iter(batch.values())))
    if size % count:
        raise ValueError(f"eval batch of {size} rows does not split over {count} processes")
    share = size // count
    return {k: np.asarray(v)[index * share : (index + 1) * share] for k, v in batch.items()}


def extract_features(
    encoder: Callable,
    variables: Any,
    batches: Iterable[Mapping[str, np.ndarray]],
    mesh: jax.sharding.Mesh,
) -> Any:
    """Encodes padded batches and keeps the valid rows.

    Every batch is a full global batch (identical on every process) with a bool 'mask'
    [b] (False on padding rows); b must be divisible by the data-parallel size. Results stay
    on the device until the end, so there is one device->host transfer in total.

    Args:
      encoder: from `make_sharded_encoder`.
      variables: model variables (replicated).
      batches: iterable of dicts of host arrays, each with 'mask'.
      mesh: the device mesh.

    Returns:
      The encoder's output pytree, each leaf a host array [N_valid, ...].
    """
    outputs, masks = [], []
    shards = sharding.data_parallel_size(mesh)
    for batch in batches:
        batch = dict(batch)
        if len(batch["mask"]) % shards:
            raise ValueError(
                f"config.eval.batch_size: {len(batch['mask'])} rows do not split over the "
                f"{shards} data shards"
            )
        masks.append(np.asarray(batch.pop("mask"), bool))
        outputs.append(
            encoder(variables, sharding.host_batch_to_global(_process_slice(batch), mesh))
        )
    if not outputs:
        raise ValueError("extract_features: no batches")
    outputs = jax.device_get(outputs)
    mask = np.concatenate(masks)
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[mask], *outputs)


def evaluate_checkpoint(
    config: Any, workdir: str | os.PathLike, *, step: int | None = None, task: Any = None
) -> dict[str, Any]:
    """Restores a run's checkpoint and runs its task's evaluation (files under workdir/eval).

    Args:
      config: the run's config (as trained; the model must match the checkpoint).
      workdir: run folder with checkpoints/.
      step: checkpoint step; the latest when None.
      task: task module; `TASKS[config.task]` when None.

    Returns:
      The task's metrics dict.

    Raises:
      FileNotFoundError: the workdir has no checkpoint.
    """
    config_lib.validate(config)
    setup = loop.setup_run(config, workdir, task)
    manager = checkpoint.make_checkpoint_manager(workdir, config.checkpoint, with_data=False)
    try:
        step = manager.latest_step() if step is None else step
        state = checkpoint.restore_checkpoint(manager, setup.target, None, step)
    finally:
        manager.close()
    return loop.run_evaluation(setup, state, config, workdir, int(step))
