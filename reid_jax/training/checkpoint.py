"""Checkpoints of a run: orbax CheckpointManager over workdir/checkpoints.

Each step folder is an orbax Composite with two items:
  state: the TrainState pytree (StandardSave / StandardRestore into sharded abstract targets);
  data:  the grain iterator state, one JSON file per process, so that a resumed run sees
         exactly the batches the uninterrupted run would have seen;
  unlogged_metrics: (JSON, when any) the per-step metrics of the log interval the save fell
         into, so that a resumed run logs the same interval means as an uninterrupted one.
`workdir/best/<step>/state` holds the model variables (params, batch_stats, ema_params) of the
best evaluation so far (`eval.select_metric`); orbax writes it under a temporary name and
renames it, and the previous best is deleted only after the new one is complete.
`restore_variables` reads the model variables of either kind of step folder without building
the model or the optimizer (evaluation, `config.init_from`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import grain.checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Sharding

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
STATE_ITEM = "state"
UNLOGGED_ITEM = "unlogged_metrics"
# orbax deletes an old step by renaming it in here; we remove it after the next save. orbax's
# own deletion (rmtree in place) cut short by a kill left a half-removed folder under a step
# name, which listed and restored as a corrupt checkpoint (found by tools/fault_injection.py).
DELETING_DIR = ".deleting"
VARIABLE_FIELDS = ("params", "batch_stats", "ema_params")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a folder that is not writable); the
    message names the folder, the step and the last complete checkpoint, which orbax never
    touches before a new one is complete."""


def _write_failure(manager: ocp.CheckpointManager, step: int, error: Exception) -> Exception:
    """A `CheckpointWriteError` for a failed save of `step`, naming what is still intact."""
    directory = Path(manager.directory)
    done = latest_step_folder(directory)
    kept = (
        f"The last complete checkpoint, {done}, is intact: make room and re-run the same "
        "command to resume from it"
        if done is not None
        else "There is no earlier complete checkpoint"
    )
    return CheckpointWriteError(
        f"{directory}: writing a checkpoint failed while saving step {step} ({error}); is the "
        f"disk full or the folder not writable? {kept}"
    )


# What a failed write raises: OSError from Python file writes, ValueError from tensorstore's
# array writes (which carry the OS error's text).
WRITE_ERRORS = (OSError, ValueError)


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
        handlers[UNLOGGED_ITEM] = ocp.JsonCheckpointHandler()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(checkpoint_config.max_to_keep),
        enable_async_checkpointing=bool(checkpoint_config.async_save),
        create=True,
        todelete_subdir=DELETING_DIR,
    )
    empty_deleted(directory, idle=True)
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def empty_deleted(directory: str | os.PathLike, *, idle: bool) -> None:
    """Removes the old steps orbax moved into `directory`/.deleting (process 0 only).

    A kill during this removal leaves debris only inside .deleting, removed next time.

    Args:
      directory: a checkpoints/ or best/ folder.
      idle: no save is in flight (manager not yet open, closed, or synchronous): .deleting
        itself goes too. Otherwise it stays, as orbax's background finalisation may be
        renaming a step into it.
    """
    folder = Path(directory) / DELETING_DIR
    if jax.process_index() != 0 or not folder.is_dir():
        return
    for entry in folder.iterdir():
        shutil.rmtree(entry, ignore_errors=True)
    if idle:
        shutil.rmtree(folder, ignore_errors=True)


def save_checkpoint(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    data_iterator: Any | None,
    unlogged_metrics: list[dict[str, Any]] | None = None,
) -> None:
    """Saves the state (and the data iterator position) as checkpoint `step`.

    Args:
      manager: from `make_checkpoint_manager`.
      step: the number of optimizer steps the state has taken.
      state: TrainState (global jax arrays).
      data_iterator: the grain iterator the run is reading, or None to skip the data item.
      unlogged_metrics: host metrics (name -> NumPy scalar) of the steps since the last log
        line, oldest first; saved with their dtypes when not empty.
    """
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if unlogged_metrics:
        # float() of a float32 is exact and JSON keeps a float64 exactly: with the dtype,
        # the restored values are the same bits.
        steps = [
            {name: [np.asarray(value).item(), str(np.asarray(value).dtype)]
             for name, value in metrics.items()}
            for metrics in unlogged_metrics
        ]  # fmt: skip
        items[UNLOGGED_ITEM] = ocp.args.JsonSave(steps)
    try:
        manager.save(step, args=ocp.args.Composite(**items), force=True)
    except WRITE_ERRORS as error:  # with async saves, possibly the previous save's failure
        raise _write_failure(manager, step, error) from error
    # save() returned once the previous save had finished, deletions included.
    empty_deleted(manager.directory, idle=False)


def wait_for_saves(manager: ocp.CheckpointManager, step: int) -> None:
    """Waits until the checkpoints being written in the background are complete.

    Raises:
      CheckpointWriteError: one of them could not be written (`step` is the latest save).
    """
    try:
        manager.wait_until_finished()
    except WRITE_ERRORS as error:
        raise _write_failure(manager, step, error) from error


def close_after_error(manager: ocp.CheckpointManager) -> None:
    """Closes a manager while an error propagates: a failed background save, which close()
    would raise again, is logged instead of replacing that error."""
    try:
        manager.close()
    except Exception as error:  # the error being raised already says what went wrong
        logging.warning("closing %s after an error: %s", manager.directory, error)


def restore_unlogged_metrics(manager: ocp.CheckpointManager, step: int) -> list[dict[str, Any]]:
    """The metrics `save_checkpoint` kept of the steps after the last log line of `step`.

    Args:
      manager: from `make_checkpoint_manager` (with the data item).
      step: the checkpoint.

    Returns:
      One dict per step (name -> NumPy scalar of the saved dtype), oldest first; [] when the
      checkpoint has none (it was saved at a log step, or by an older version).
    """
    if not (manager.directory / str(step) / UNLOGGED_ITEM).is_dir():
        return []
    restored = manager.restore(
        step, args=ocp.args.Composite(**{UNLOGGED_ITEM: ocp.args.JsonRestore()})
    )
    return [
        {name: np.asarray(value, dtype=dtype) for name, (value, dtype) in metrics.items()}
        for metrics in restored[UNLOGGED_ITEM]
    ]


def abstract_state(state_shapes: Any, sharding: Sharding | Any) -> Any:
    """Turns `jax.eval_shape` output into restore targets carrying shardings.

    A checkpoint restores onto any mesh: orbax reads each leaf into the target's layout,
    whatever device count, process count or fsdp split wrote it.

    Args:
      state_shapes: pytree of `jax.ShapeDtypeStruct` (no sharding).
      sharding: one sharding for every leaf, or a pytree of shardings matching
        `state_shapes` (`sharding.state_sharding`).

    Returns:
      The same pytree with the sharding set on every leaf.
    """
    if isinstance(sharding, Sharding):
        sharding = jax.tree.map(lambda _: sharding, state_shapes)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_shapes, sharding
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


def make_best_manager(workdir: str | os.PathLike) -> ocp.CheckpointManager:
    """Manager of workdir/best: one step folder, the best evaluation's model variables."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True, todelete_subdir=DELETING_DIR
    )
    empty_deleted(Path(workdir).absolute() / BEST_DIR, idle=True)
    return ocp.CheckpointManager(
        Path(workdir).absolute() / BEST_DIR,
        options=options,
        item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler()},
    )


def save_best(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Writes the model variables of `state` as the new best (the old one goes afterwards)."""
    variables = {name: getattr(state, name) for name in VARIABLE_FIELDS}
    try:
        manager.save(
            step,
            args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(variables)}),
            force=True,
        )
        manager.wait_until_finished()
    except WRITE_ERRORS as error:
        raise _write_failure(manager, step, error) from error
    empty_deleted(manager.directory, idle=True)


def is_step_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a finished checkpoint step folder (an integer name with a state item)."""
    path = Path(path)
    return path.name.isdigit() and (path / STATE_ITEM).is_dir()


def step_folders(folder: str | os.PathLike) -> list[Path]:
    """Finished step folders directly under `folder`, by ascending step ([] if none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if is_step_folder(p)]
    return sorted(steps, key=lambda p: int(p.name))


def latest_step_folder(folder: str | os.PathLike) -> Path | None:
    """The highest finished step folder under `folder`, or None."""
    steps = step_folders(folder)
    return steps[-1] if steps else None


def restore_variables(step_folder: str | os.PathLike, sharding: Sharding | None = None) -> dict:
    """Reads only the model variables of a checkpoint step folder (no optimizer state).

    Works on training checkpoints (`checkpoints/<step>`) and on `best/<step>`.

    Args:
      step_folder: the step folder.
      sharding: where to place the arrays; None returns NumPy arrays on the host.

    Returns:
      {'params': ..., 'batch_stats': ..., 'ema_params': ...} with the fields the checkpoint
      has ({} for an empty collection).
    """
    path = Path(step_folder).absolute() / STATE_ITEM
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    wanted = {name: tree[name] for name in VARIABLE_FIELDS if name in tree}

    def restore_arg(meta):
        if sharding is None:
            return ocp.RestoreArgs(restore_type=np.ndarray)
        return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=meta.shape, dtype=meta.dtype)

    item = jax.tree.map(lambda meta: np.zeros(meta.shape, meta.dtype), wanted)
    restored = checkpointer.restore(
        path,
        args=ocp.args.PyTreeRestore(
            item=item,
            restore_args=jax.tree.map(restore_arg, wanted),
            partial_restore=True,
        ),
    )
    return {name: restored.get(name, {}) for name in wanted}
