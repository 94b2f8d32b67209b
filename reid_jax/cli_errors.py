"""What `reid-jax` prints when a command fails, and its exit status.

Bad input (a config, dataset or path error, a mistyped override) is one line and status 2; a
lost peer process of a multi-process run is one line and status 1; anything else is a bug and
prints its traceback (status 1). `--debug` shows every traceback.
"""

from __future__ import annotations

import sys
import traceback

USAGE_ERROR = 2


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: printed as one line."""
    from reid_jax.config_lib import ConfigError
    from reid_jax.data.errors import DatasetFormatError
    from reid_jax.export.onnx import OnnxNotInstalledError
    from reid_jax.export.run_export import NotExportableError
    from reid_jax.inference import BundleError
    from reid_jax.inference.approximate import ApproximateIndexError
    from reid_jax.inference.index import IndexFormatError
    from reid_jax.text.attribute_query import AttributeQueryError
    from reid_jax.training.checkpoint import CheckpointWriteError
    from reid_jax.training.init_from import InitFromError
    from reid_jax.weights.readers import WeightsError

    return (
        UsageError,
        ConfigError,
        DatasetFormatError,
        FileNotFoundError,
        FileExistsError,
        InitFromError,
        CheckpointWriteError,
        WeightsError,
        NotExportableError,
        OnnxNotInstalledError,
        BundleError,
        IndexFormatError,
        AttributeQueryError,
        ApproximateIndexError,
    )


def is_user_error(error: BaseException) -> bool:
    """Whether `error` means bad input (printed as one line, status 2), not a bug."""
    if isinstance(error, user_errors()):
        return True
    # Config checks outside config_lib raise ValueError('config.<field>: ...').
    return isinstance(error, (ValueError, KeyError)) and str(error).strip("'\"").startswith(
        "config."
    )


def multi_process() -> bool:
    """Whether this process joined a multi-process run (`cli._start`); never imports jax."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def report(error: Exception, *, debug: bool) -> int:
    """Prints what ended the command; returns the exit status."""
    if multi_process():
        from reid_jax import multihost

        lost = multihost.lost_peer_message(error)
    else:
        lost = None
    if lost and not debug:
        print(f"error: {lost}", file=sys.stderr)  # the traceback is in logs/process_<i>.log
        return 1
    if debug or not is_user_error(error):
        traceback.print_exc()
        return USAGE_ERROR if is_user_error(error) else 1
    message = str(error).strip("'\"") if isinstance(error, KeyError) else str(error)
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR
