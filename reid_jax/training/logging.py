"""Output of a run: workdir/metrics.jsonl, TensorBoard events, atomic JSON files, log files.

Only process 0 writes metrics; other processes get a writer whose methods do nothing. Every
process writes its own log file, workdir/logs/process_<i>.log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
from absl import logging as absl_logging

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
LOGS_DIR = "logs"


class _QuietLibraries(logging.Filter):
    """Drops INFO/DEBUG records of chatty libraries (orbax logs every save step by step)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps orbax's per-save INFO lines out of the console (idempotent)."""
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())


def process_log_path(workdir: str | os.PathLike, process_index: int) -> Path:
    """workdir/logs/process_<process_index>.log."""
    return Path(workdir) / LOGS_DIR / f"process_{process_index}.log"


@contextlib.contextmanager
def process_log_file(workdir: str | os.PathLike) -> Iterator[Path]:
    """Copies this process's log records into workdir/logs/process_<i>.log while it runs.

    Every process of a multi-process run writes its own file, appended to by each command on
    the run folder, so every host's log stays with the run whatever launched it. The console
    keeps getting the same records. The file starts with where the process runs and ends with
    the traceback of an exception that leaves the block (only in the file: the CLI reports
    errors on the console itself).

    Args:
      workdir: the run folder (logs/ is created in it).

    Yields:
      The log file's path.
    """
    path = process_log_path(workdir, jax.process_index())
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(absl_logging.PythonFormatter())
    handler.addFilter(_QuietLibraries())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        devices = ", ".join(str(device) for device in jax.local_devices())
        absl_logging.info(
            "process %d of %d on %s (pid %d): %s",
            *(jax.process_index(), jax.process_count(), socket.gethostname(), os.getpid(), devices),
        )
        yield path
    except Exception:
        handler.handle(
            logging.LogRecord(
                "reid_jax",
                logging.ERROR,
                __file__,
                0,
                "stopped by an exception",
                (),
                sys.exc_info(),
            )
        )
        raise
    finally:
        root.removeHandler(handler)
        close_quietly(handler.close, str(path))  # a full disk must not hide the real error


def close_quietly(close: Any, what: str) -> None:
    """Calls `close()`; an OSError (a flush to a full disk) is logged, not raised, so that it
    never replaces the error being raised (use only on error paths and for log files)."""
    try:
        close()
    except OSError as error:
        absl_logging.warning("could not close %s: %s", what, error)


def _make_readable(path: str) -> None:
    """mkstemp files are 0600; give the final file the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON to `path` via a temporary file and a rename.

    Args:
      path: destination file; its folder is created if missing.
      obj: JSON-serialisable object.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        _make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_finite(step: int, scalars: Mapping[str, float]) -> None:
    """Stops the run if a logged metric is NaN or infinite.

    Args:
      step: the step the metrics belong to (named in the error).
      scalars: metric name -> host float.

    Raises:
      FloatingPointError: naming the step and every non-finite metric.
    """
    bad = {name: value for name, value in scalars.items() if not math.isfinite(value)}
    if bad:
        raise FloatingPointError(f"non-finite metrics at step {step}: {bad}")


def truncate_metrics(workdir: str | os.PathLike, last_step: int) -> None:
    """Drops metrics.jsonl lines logged after `last_step` (a run resumed from a checkpoint).

    Args:
      workdir: the run folder.
      last_step: step of the restored checkpoint; lines with a larger 'step' are removed.
    """
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= last_step]
    if len(kept) == len(lines):
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in kept))
    _make_readable(tmp)
    os.replace(tmp, path)


class MetricWriter:
    """Appends one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard.

    Args:
      workdir: the run folder.
      enabled: False on processes other than 0 (everything becomes a no-op).
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        self._path = Path(workdir) / METRICS_FILE
        self._tensorboard = None
        if enabled:
            from tensorboardX import SummaryWriter  # slow import, only where used

            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._tensorboard = SummaryWriter(str(Path(workdir) / TENSORBOARD_DIR))

    def write(self, step: int, scalars: Mapping[str, float], **fields: Any) -> None:
        """Logs scalars for one step.

        Args:
          step: optimizer step.
          scalars: name -> float (written to TensorBoard as well).
          **fields: extra JSON fields (e.g. epoch, kind='eval').
        """
        if not self.enabled:
            return
        record = {"step": int(step), **fields, **{k: float(v) for k, v in scalars.items()}}
        # One write() of a whole line in append mode: a crash never leaves half a record
        # in the middle of the file.
        with open(self._path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, float(value), int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
