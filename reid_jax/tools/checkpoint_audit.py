"""Checks a run folder after a crash: are its checkpoints whole, do two runs agree bit for bit.

Used by the fault-injection harness (`reid_jax.tools.fault_injection`); every function reads
files only and never changes the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from reid_jax.training import checkpoint
from reid_jax.training import logging as run_logging

# orbax writes a step into '<step>.orbax-checkpoint-tmp' and renames it when it is complete.
TEMPORARY_MARK = ".orbax-checkpoint-tmp"
# Logged metrics that measure time, not training, and so differ between any two runs.
TIMING_METRICS = ("train/images_per_second",)


@dataclasses.dataclass
class CheckpointAudit:
    """What a checkpoints/ folder holds.

    Attributes:
      complete: steps whose folder restores fully (state and data items), ascending.
      temporary: names of unfinished temporary folders (a save that was cut off; orbax never
        lists them as steps).
      corrupt: (folder name, reason) for step-named folders that do not restore.
    """

    complete: list[int]
    temporary: list[str]
    corrupt: list[tuple[str, str]]

    @property
    def latest(self) -> int | None:
        """The newest complete step, None if there is none."""
        return self.complete[-1] if self.complete else None


def read_state(step_folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every leaf of a checkpoint's train state onto the host.

    Args:
      step_folder: checkpoints/<step>.

    Returns:
      Leaf path (jax keystr, e.g. "['params']['model_0']...") -> NumPy array.
    """
    path = Path(step_folder).absolute() / checkpoint.STATE_ITEM
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    leaves = jax.tree_util.tree_leaves_with_path(restored)
    return {jax.tree_util.keystr(key): np.asarray(value) for key, value in leaves}


def _check_step_folder(folder: Path) -> None:
    """Raises if a step folder lacks a file of a finished save or does not restore."""
    for name in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing")
    json.loads((folder / "_CHECKPOINT_METADATA").read_text())
    data_files = sorted((folder / "data").glob("process_*.json"))
    if not data_files:
        raise FileNotFoundError(f"{folder / 'data'} holds no iterator state")
    for path in data_files:
        json.loads(path.read_text())
    leaves = read_state(folder)
    if not leaves:
        raise ValueError(f"{folder / checkpoint.STATE_ITEM} restores to an empty tree")


def audit_checkpoints(checkpoint_dir: str | os.PathLike) -> CheckpointAudit:
    """Restores every step folder under `checkpoint_dir` and sorts what it finds.

    Args:
      checkpoint_dir: a run's checkpoints/ folder (may be missing: nothing saved yet).

    Returns:
      A CheckpointAudit. Folders that are neither step-named nor temporary are ignored.
    """
    folder = Path(checkpoint_dir)
    complete, temporary, corrupt = [], [], []
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    for entry in entries:
        if TEMPORARY_MARK in entry.name:
            temporary.append(entry.name)
        elif entry.name.isdigit():
            try:
                _check_step_folder(entry)
            except Exception as error:  # any failure to read back is corruption
                corrupt.append((entry.name, f"{type(error).__name__}: {error}"[:500]))
            else:
                complete.append(int(entry.name))
    return CheckpointAudit(sorted(complete), temporary, corrupt)


def differing_leaves(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Leaf paths whose bytes, shape or dtype differ between two `read_state` results.

    Comparing bytes (not values) makes NaN equal to the same NaN and -0.0 differ from 0.0.

    Returns:
      Sorted paths that differ or exist in only one of the two.
    """
    names = sorted(set(a) | set(b))
    return [
        name
        for name in names
        if name not in a
        or name not in b
        or a[name].dtype != b[name].dtype
        or a[name].shape != b[name].shape
        or a[name].tobytes() != b[name].tobytes()
    ]


def logged_records(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records without timing metrics, in file order."""
    path = Path(workdir) / run_logging.METRICS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in records]


def differing_records(
    reference: list[dict[str, Any]], other: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Where two runs' logged records differ (floats compared exactly, as JSON keeps them).

    Returns:
      One {'index', 'reference', 'other'} per differing line ([] when identical); a missing
      line is None on its side.
    """
    out = []
    for index in range(max(len(reference), len(other))):
        want = reference[index] if index < len(reference) else None
        got = other[index] if index < len(other) else None
        if want != got:
            out.append({"index": index, "reference": want, "other": got})
    return out
