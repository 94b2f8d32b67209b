"""Checkpoints of a run: orbax CheckpointManager over workdir/checkpoints.

Each step folder is an orbax Composite with two items:
  state: the TrainState pytree (StandardSave / StandardRestore into sharded abstract targets);
  data:  the grain iterator state, one JSON file per process, so that a resumed run sees
         exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grain.checkpoint
import jax
import orbax.checkpoint as ocp
from jax.sharding import Sharding

CHECKPOINT_DIR = "checkpoints"


def make_checkpoint_manager(
    workdir: str | os.PathLike, checkpoint_config: Any, *, with_data: bool = True
) -> ocp.CheckpointManager:
    """Opens (or creates) the checkpoint folder of a run.

    Args:
      workdir: the run folder; checkpoints live in workdir/checkpoints.
      checkpoint_config: `config.checkpoint` (max_to_keep, async_save).
      with_data: whether the manager handles the 'data' item (False for evaluation-only use).

    Returns:
      An `ocp.CheckpointManager`; the caller decides when to save (`save_checkpoint`).
    """
    directory = Path(workdir).absolute() / CHECKPOINT_DIR
    handlers = {"state": ocp.StandardCheckpointHandler()}
    if with_data:
        handlers["data"] = grain.checkpoint.CheckpointHandler()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(checkpoint_config.max_to_keep),
        enable_async_checkpointing=bool(checkpoint_config.async_save),
        create=True,
    )
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save_checkpoint(
    manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any | None
) -> None:
    """Saves the state (and the data iterator position) as checkpoint `step`.

    Args:
      manager: from `make_checkpoint_manager`.
      step: the number of optimizer steps the state has taken.
      state: TrainState (global jax arrays).
      data_iterator: the grain iterator the run is reading, or None to skip the data item.
    """
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    manager.save(step, args=ocp.args.Composite(**items), force=True)


def abstract_state(state_shapes: Any, sharding: Sharding) -> Any:
    """Turns `jax.eval_shape` output into restore targets carrying `sharding`.

    Args:
      state_shapes: pytree of `jax.ShapeDtypeStruct` (no sharding).
      sharding: sharding every restored leaf should have (replicated for the train state).

    Returns:
      The same pytree with `sharding` set on every leaf.
    """
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_shapes
    )


def restore_checkpoint(
    manager: ocp.CheckpointManager,
    target: Any,
    data_iterator: Any | None = None,
    step: int | None = None,
) -> Any:
    """Restores a checkpoint into `target`; the data iterator is repositioned in place.

    Args:
      manager: from `make_checkpoint_manager`.
      target: abstract TrainState from `abstract_state`.
      data_iterator: grain iterator to reposition, or None to restore the state only.
      step: checkpoint to restore; the latest when None.

    Returns:
      The restored TrainState.

    Raises:
      FileNotFoundError: there is no checkpoint in the folder.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]
