"""`reid-jax import-weights`: a converted checkpoint written as a run folder.

The folder holds config.json and data_info.json (sizes from the checkpoint), the variables as
checkpoint step 0 (`checkpoints/0/state`: params, batch_stats) and import.json (kind, source
file, its epoch/scores, the parameters the file did not fill). `reid-jax evaluate --workdir`
evaluates it and `config.init_from` fine-tunes from it; training inside it is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax

from reid_jax.weights import convert_checkpoint


def import_to_run_folder(
    kind: str, source: str | os.PathLike, config: Any, workdir: str | os.PathLike
) -> Path:
    """Converts `source` with the `kind` converter and writes the run folder `workdir`.

    Raises:
      FileExistsError: `workdir` already holds checkpoints.
      WeightsError: the file does not fit (see `convert_checkpoint`).
    """
    from reid_jax.training import checkpoint, run_folder
    from reid_jax.training import logging as run_logging

    workdir = Path(workdir)
    if checkpoint.step_folders(workdir / checkpoint.CHECKPOINT_DIR):
        raise FileExistsError(f"{workdir}: already holds checkpoints; choose a new --workdir")
    imported = convert_checkpoint(kind, source, config)
    workdir.mkdir(parents=True, exist_ok=True)
    run_folder.write_config(workdir, imported.config)
    run_folder.write_data_info(workdir, imported.info)
    manager = checkpoint.make_checkpoint_manager(
        workdir, imported.config.checkpoint, with_data=False
    )
    try:
        state = {**jax.tree.map(jax.numpy.asarray, imported.variables), "ema_params": {}}
        state.setdefault("batch_stats", {})
        checkpoint.save_checkpoint(manager, 0, state, None)
        manager.wait_until_finished()
    finally:
        manager.close()
    run_logging.write_json_atomic(
        workdir / "import.json",
        {
            "kind": kind,
            "source": str(Path(source).absolute()),
            "metadata": imported.metadata,
            "kept_fresh": imported.kept_fresh,
        },
    )
    return workdir
