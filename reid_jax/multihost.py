"""Multi-process coordination: compile every process's program, then start it together.

On CPU, multi-process JAX runs collectives through gloo, which sets up a communicator the
first time a program with collectives runs and gives up when a peer is 30 s late
("Gloo context initialization failed: DEADLINE_EXCEEDED"). Processes reach that moment at
very different times: only process 0 writes the persistent compilation cache, so on a resume
one process may load the train step in a second while another compiles it for minutes.
`lockstep` therefore compiles a jitted function ahead of its first run on new argument
shapes and then waits at a coordination-service barrier (a key-value wait with a long
timeout, no collective) until every process has compiled it too. Single-process runs get
the jitted function back unchanged.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import jax
from orbax.checkpoint import multihost as orbax_multihost

BARRIER_TIMEOUT_S = 3600  # a full-size compile on a slow host stays well inside this
_barrier_ids = itertools.count()


def wait_for_all_processes(name: str) -> None:
    """Blocks until every process reaches the barrier `name` (no-op with one process).

    Every process must call it in the same order with the same name; a counter makes each
    barrier key unique, as the coordination service requires.
    """
    if jax.process_count() == 1:
        return
    barrier = orbax_multihost.get_barrier_sync_fn()  # the distributed client's barrier
    barrier(key=f"reid_jax_{name}_{next(_barrier_ids)}", timeout_ms=BARRIER_TIMEOUT_S * 1000)


def _signature(args: tuple[Any, ...]) -> Any:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple(
        (getattr(x, "shape", None), str(getattr(x, "dtype", type(x))), getattr(x, "sharding", None))
        for x in leaves
    )


def lockstep(jitted: Any, name: str) -> Callable[..., Any]:
    """`jitted` (a `jax.jit` function) that every process compiles before any process runs it.

    Per distinct argument signature (tree structure, shapes, dtypes, shardings): lower and
    compile, wait for every process, then call the compiled executable from then on.

    Args:
      jitted: the jitted function (positional arguments only).
      name: a label for the barrier keys and the log.

    Returns:
      A function with `jitted`'s positional signature.
    """
    if jax.process_count() == 1:
        return jitted
    compiled: dict[Any, Any] = {}

    def run(*args: Any) -> Any:
        key = _signature(args)
        if key not in compiled:
            executable = jitted.lower(*args).compile()
            logging.info("%s compiled; waiting for every process", name)
            wait_for_all_processes(name)
            compiled[key] = executable
        return compiled[key](*args)

    return run


# Words of the errors a collective or the coordination service raises when another process
# of the run has gone (gloo / NCCL transport errors, heartbeat and barrier failures).
_PEER_FAILURE_WORDS = (
    "gloo",
    "nccl",
    "connection reset",
    "connection closed",
    "connection refused",
    "heartbeat",
    "coordination service",
    "barrier",
    "unavailable",
)


def peer_failure(error: BaseException) -> str | None:
    """Describes `error` if it says another process of a multi-process run has gone.

    Args:
      error: an exception that ended a command.

    Returns:
      The first line of the runtime error (e.g. 'UNKNOWN: Gloo all-reduce failed: ...
      Connection reset by peer'), or None when it is not a lost-peer error.
    """
    import jax

    if not isinstance(error, jax.errors.JaxRuntimeError):
        return None
    text = str(error).strip()
    if not any(word in text.lower() for word in _PEER_FAILURE_WORDS):
        return None
    return text.splitlines()[0] if text else type(error).__name__


def lost_peer_message(error: BaseException) -> str | None:
    """One line for the user when `error` says another process of the run has gone.

    Args:
      error: the exception that ended a command of a multi-process run.

    Returns:
      The line (naming this process and the failed collective), or None for other errors.
    """
    import jax

    reason = peer_failure(error)
    if reason is None:
        return None
    return (
        f"process {jax.process_index()} of {jax.process_count()} lost contact with another "
        f"process of the run ({reason}); it has probably died or been killed (see its "
        "logs/process_<i>.out and .log in the run folder). This process stops too, since "
        "every step needs all of them: re-run the same command on every process to resume "
        "from the last checkpoint"
    )


def exit_now(status: int) -> NoReturn:
    """Ends a failed process of a multi-process run at once, with `status`.

    A normal exit runs jax.distributed's shutdown, a barrier that every process must reach:
    after a peer has died it holds this process until the coordination service's heartbeat
    timeout and then aborts it. Exiting at once also closes this process's connections, so
    the processes still running fail their next collective within seconds instead of waiting
    for it.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()  # flushes the log files (logs/process_<i>.log)
    os._exit(status)
