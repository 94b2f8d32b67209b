"""reid-jax command line: flags in, library calls out.

    reid-jax train --config configs/ssan.py[:variant,smoke] --workdir DIR [--config.x.y=v]
    reid-jax evaluate --config configs/ssan.py --workdir DIR     # latest checkpoint of DIR
    reid-jax evaluate --features FILE.npz --workdir OUT          # saved query/gallery features

Multi-host runs set `--config.mesh.distributed=True` (or REID_JAX_DISTRIBUTED=1) so that
`jax.distributed.initialize()` runs before anything touches the devices. jax finds the
coordinator, process count and process id itself only under SLURM, Open MPI, Kubernetes or
Cloud TPU; elsewhere set REID_JAX_COORDINATOR (host:port of process 0),
REID_JAX_NUM_PROCESSES and REID_JAX_PROCESS_ID (launch/multihost.sh does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

COMMANDS = ("train", "evaluate")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with ':argument', e.g. configs/ssan.py:smoke.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs, eval).")
_FEATURES = flags.DEFINE_string(
    "features", None, "evaluate: a features .npz to evaluate instead of a checkpoint."
)
_RERANK = flags.DEFINE_bool("rerank", False, "evaluate --features: k-reciprocal re-ranking.")


def _distributed(config) -> bool:
    return os.environ.get("REID_JAX_DISTRIBUTED", "0") not in ("", "0") or bool(
        config.mesh.distributed
    )


def _distributed_arguments() -> dict[str, str | int]:
    """`jax.distributed.initialize` arguments from the REID_JAX_* variables that are set."""
    arguments: dict[str, str | int] = {}
    for name, key, kind in (
        ("REID_JAX_COORDINATOR", "coordinator_address", str),
        ("REID_JAX_NUM_PROCESSES", "num_processes", int),
        ("REID_JAX_PROCESS_ID", "process_id", int),
    ):
        if value := os.environ.get(name, ""):
            try:
                arguments[key] = kind(value)
            except ValueError:
                raise app.UsageError(f"${name} must be an integer, got {value!r}") from None
    if len(arguments) == 3:
        # All given: skip jax's cluster detection, which under SLURM would also restrict each
        # process to the one GPU numbered SLURM_LOCALID.
        arguments["cluster_detection_method"] = "deactivate"
    return arguments


def _run(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"usage: reid-jax {{{'|'.join(COMMANDS)}}} --workdir DIR "
            f"[--config FILE[:ARG]] [--features FILE.npz], got {argv[1:]}"
        )
    command, config, workdir = argv[1], _CONFIG.value, _WORKDIR.value
    if workdir is None:
        raise app.UsageError("--workdir is required")
    if command == "evaluate" and _FEATURES.value:
        from reid_jax.evaluation.report import run_evaluate_features

        run_evaluate_features(_FEATURES.value, workdir, rerank=_RERANK.value)
        return
    if config is None:
        raise app.UsageError("--config is required")
    if _distributed(config):
        import jax

        jax.distributed.initialize(**_distributed_arguments())
    if command == "train":
        from reid_jax.training.loop import train_and_evaluate

        train_and_evaluate(config, workdir)
    else:
        from reid_jax.training.evaluate import evaluate_checkpoint

        evaluate_checkpoint(config, workdir)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (`reid-jax`); `argv` defaults to sys.argv (tests pass a list)."""
    # absl keeps flag values between parses: start each call from the defaults.
    flags.FLAGS.unparse_flags()
    app.run(_run, argv=list(argv) if argv is not None else None)


if __name__ == "__main__":
    main()
