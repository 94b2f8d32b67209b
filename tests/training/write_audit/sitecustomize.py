"""Records which files a process writes, for tests/training/test_multiprocess.py.

Python imports `sitecustomize` at start-up from the path, so a process started with this
folder on PYTHONPATH and AUDIT_WRITES_UNDER set appends the absolute path of every file it
opens for writing, and every rename target, under that folder to
$AUDIT_WRITES_TO/process_$REID_JAX_PROCESS_ID.txt (one path a line). Only Python-level
writes are seen (open, os.open, os.rename/replace); tensorstore's C++ writes are not.
"""

import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT


def _install() -> None:
    watched = os.path.realpath(os.environ["AUDIT_WRITES_UNDER"]) + os.sep
    process = os.environ.get("REID_JAX_PROCESS_ID", "single")
    os.makedirs(os.environ["AUDIT_WRITES_TO"], exist_ok=True)
    record = open(  # open for the life of the process
        os.path.join(os.environ["AUDIT_WRITES_TO"], f"process_{process}.txt"), "a", buffering=1
    )

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if mode else bool(flags & _WRITE_FLAGS)
        elif event == "os.rename":
            path, writes = args[1], True
        else:
            return
        if writes and isinstance(path, (str, os.PathLike)):
            path = os.path.realpath(os.fspath(path))
            if path.startswith(watched):
                record.write(path[len(watched) :] + "\n")

    sys.addaudithook(hook)


if os.environ.get("AUDIT_WRITES_UNDER"):
    _install()
