"""Compile time, s/step and images/s of the full-size AlignedReID train step.

The step is exactly the one the training loop runs: `configs/alignedreid.py:market1501`
(ResNet-50, 256 x 128, PK 32 x 4 = 128 images, 751 identities, Adam + coupled L2, exp schedule),
jitted by `reid_jax.training.run_setup.make_train_step` with the state replicated and donated and
the
batch split on 'data'. Inputs are random normalised images (no decoding: the input pipeline has
its own benchmark), so this measures the model, losses and optimizer only. `--mutual` times two
mutually trained models in one step. Prints one markdown table row.

Usage (from the repository root):
  /work/venv/bin/python -m benchmarks.alignedreid_train_step --steps=2
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from reid_jax import sharding
from reid_jax.training import optim, run_setup
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import alignedreid
from reid_jax.training.tasks.base import TrainDataInfo

_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps after the first (compiling) one.")
_MUTUAL = flags.DEFINE_bool("mutual", False, "Two mutually trained models in one step.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global P x K batch (K = 4).")
_LOCAL = flags.DEFINE_float("local_weight", 0.0, "Local triplet weight (README runs: 0).")

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "alignedreid.py"
NUM_CLASSES = 751  # Market-1501 training identities


def load_config(arg: str):
    """`configs/alignedreid.py:<arg>` as the CLI would build it."""
    spec = importlib.util.spec_from_file_location("alignedreid_config", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def main(argv) -> None:
    del argv
    config = load_config("market1501,mutual" if _MUTUAL.value else "market1501")
    config.train.batch_size = _BATCH.value
    config.loss.local_weight = _LOCAL.value
    batch_size = config.train.batch_size
    info = TrainDataInfo(
        num_examples=12936, steps_per_epoch=751 // (batch_size // 4), num_classes=NUM_CLASSES
    )
    mesh = sharding.make_mesh(config.mesh)
    model = alignedreid.create_model(config, info)
    total_steps = config.train.num_epochs * info.steps_per_epoch
    variables = jax.jit(lambda key: alignedreid.init_variables(model, key, config))(
        jax.random.key(0)
    )
    tx = optim.make_optimizer(
        config.optim,
        variables["params"],
        steps_per_epoch=info.steps_per_epoch,
        total_steps=total_steps,
    )
    state = sharding.replicate(create_train_state(variables, tx), mesh)
    step = run_setup.make_train_step(alignedreid, model, tx, config, info, mesh)

    rng = np.random.default_rng(0)
    height, width = config.data.image_size
    host_batch = {
        "image": rng.normal(size=(batch_size, height, width, 3)).astype(np.float32),
        "label": np.repeat(np.arange(batch_size // 4, dtype=np.int32), 4),
    }
    batch = sharding.host_batch_to_global(host_batch, mesh)
    root_key = sharding.replicate(jax.random.key(1), mesh)

    start = time.perf_counter()
    compiled = step.lower(state, batch, root_key).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch, root_key)  # warm-up step (first run allocations)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        state, metrics = compiled(state, batch, root_key)
    loss = float(jax.device_get(metrics["loss"]))
    step_s = (time.perf_counter() - start) / _STEPS.value
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    models = 2 if _MUTUAL.value else 1
    print(
        f"| {models} x ResNet-50, 256x128, batch {batch_size}, local w {_LOCAL.value:g} "
        f"| {jax.devices()[0].platform} x {jax.device_count()} | {compile_s:.1f} "
        f"| {step_s:.2f} | {batch_size / step_s:.1f} | {loss:.3f} | {load:.1f} "
        f"| {platform.processor() or platform.machine()} |"
    )


if __name__ == "__main__":
    app.run(main)
