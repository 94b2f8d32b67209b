"""Compile time, s/step and images/s of the full-size AlignedReID train step.

The step is exactly the one the training loop runs: `configs/alignedreid.py:market1501`
(ResNet-50, 256 x 128, PK 32 x 4 = 128 images, 751 identities, Adam + coupled L2, exp schedule),
jitted by `reid_jax.training.run_setup.make_train_step` with the state replicated and donated and
the batch split on 'data'. Inputs are random normalised images (no decoding: the input pipeline
has its own benchmark), so this measures the model, losses and optimizer only. `--mutual` times
two mutually trained models in one step; `--dtype=bfloat16` sets the compute dtype. Prints one
markdown table row; `measure` returns every field (FLOPs, memory, MFU on a GPU) to `gpu_suite`.

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

from benchmarks import step_timing
from reid_jax import config_lib, sharding
from reid_jax.training import optim, run_setup
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import alignedreid
from reid_jax.training.tasks.base import TrainDataInfo

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "alignedreid.py"
NUM_CLASSES = 751  # Market-1501 training identities


def load_config(
    arg: str, *, dtype: str = "float32", batch_size: int = 0, local_weight: float | None = None
):
    """`configs/alignedreid.py:<arg>` as the CLI would build it, with the benchmark's choices.

    Args:
      arg: the config argument, e.g. 'market1501', 'market1501,mutual' or 'market1501,smoke'.
      dtype: model.dtype.
      batch_size: global P x K batch; 0 keeps the config's.
      local_weight: loss.local_weight; None keeps the config's.
    """
    spec = importlib.util.spec_from_file_location("alignedreid_config", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.model.dtype = dtype
    config.train.batch_size = batch_size or config.train.batch_size
    if local_weight is not None:
        config.loss.local_weight = local_weight
    return config


def step_parts(config, num_classes: int):
    """(data facts, model, optimizer) of the step for `config`; nothing compiled."""
    batch_size = config.train.batch_size
    info = TrainDataInfo(
        num_examples=12936,
        steps_per_epoch=max(num_classes // (batch_size // 4), 1),
        num_classes=num_classes,
    )
    model = alignedreid.create_model(config, info)
    shapes = jax.eval_shape(
        lambda r: alignedreid.init_variables(model, r, config), jax.random.key(0)
    )
    tx = optim.make_optimizer(
        config.optim,
        shapes["params"],
        steps_per_epoch=info.steps_per_epoch,
        total_steps=config.train.num_epochs * info.steps_per_epoch,
    )
    return info, model, tx


def make_init(config, num_classes: int, mesh: jax.sharding.Mesh):
    """Jitted rng -> step-0 TrainState, replicated on `mesh` (independent of `model.dtype`:
    parameters and BatchNorm statistics are float32 whatever the compute dtype)."""
    _, model, tx = step_parts(config, num_classes)
    return jax.jit(
        lambda r: create_train_state(alignedreid.init_variables(model, r, config), tx),
        out_shardings=sharding.replicated(mesh),
    )


def random_batch(config, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random normalised images in P identities x K = 4 images."""
    height, width = config.data.image_size
    return {
        "image": rng.normal(size=(batch_size, height, width, 3)).astype(np.float32),
        "label": np.repeat(np.arange(batch_size // 4, dtype=np.int32), 4),
    }


def measure(
    config,
    *,
    steps: int,
    budget_s: float | None = None,
    num_classes: int = NUM_CLASSES,
    label: str = "market1501",
    init=None,
) -> dict:
    """Initialises, compiles and times the AlignedReID train step of `config`.

    FLOPs are XLA's `cost_analysis` (the ResNet trunk has no scan; `flop_note` checks the
    while loops of the optimised HLO).

    Args:
      config: from `load_config`.
      steps: most timed steps after the warm-up step.
      budget_s: stop timing once the timed steps took this long (at least one runs).
      num_classes: training identities (the ID classifier's size).
      label: the config name the result carries.
      init: `make_init`'s function to reuse (its compilation is not timed again); None builds
        one ('init_seconds' then includes its compilation).

    Returns:
      The result fields (JSON-serialisable).
    """
    batch_size = config.train.batch_size
    mesh = sharding.make_mesh(config.mesh)
    info, model, tx = step_parts(config, num_classes)
    init = init or make_init(config, num_classes, mesh)
    start = time.perf_counter()
    state = jax.block_until_ready(init(jax.random.key(0)))
    init_seconds = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    step = run_setup.make_train_step(alignedreid, model, tx, config, info, mesh)
    step_timing.progress(f"initialised {num_params / 1e6:.1f} M parameters in {init_seconds:.1f} s")
    # This process's share of the global batch (all of it with one process).
    host_batch = random_batch(config, batch_size // jax.process_count(), np.random.default_rng(0))
    batch = sharding.host_batch_to_global(host_batch, mesh)
    root_key = step_timing.replicated_key(1, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch, root_key).compile()
    compile_seconds = time.perf_counter() - start
    flops = step_timing.xla_flops(compiled)
    loops, rng_loops = step_timing.while_loops(compiled)
    temp_gib, argument_gib = step_timing.memory_gib(compiled)
    step_timing.progress(
        f"compiled in {compile_seconds:.1f} s; XLA temp buffers {temp_gib:.2f} GiB + arguments "
        f"{argument_gib:.2f} GiB; {flops / 1e12:.3f} TFLOP per step"
    )
    state, metrics, times = step_timing.time_steps(
        compiled, state, batch, root_key, steps, budget_s
    )
    seconds = float(np.median(times))
    return {
        "device": step_timing.device_description(),
        "config": label,
        "dtype": config.model.dtype,
        "models": config.model.num_models,
        "batch": batch_size,
        "local_weight": config.loss.local_weight,
        "params_millions": round(num_params / 1e6, 1),
        "init_seconds": round(init_seconds, 1),
        "compile_seconds": round(compile_seconds, 1),
        "seconds_per_step": round(seconds, 3),
        "step_times": [round(t, 3) for t in times],
        "images_per_second": round(batch_size / seconds, 2),
        "tflop_per_step": step_timing.significant(flops / 1e12),
        "flop_note": step_timing.flop_note(loops, rng_loops),
        "all_reduce_ops": step_timing.all_reduce_ops(compiled),
        "temp_memory_gib": round(temp_gib, 2),
        "argument_memory_gib": round(argument_gib, 2),
        "peak_rss_gib": round(step_timing.peak_rss_gib(), 2),
        "device_peak_memory_gib": step_timing.device_peak_memory_gib(),
        "loss": step_timing.host_scalar(metrics["loss"]),
        **step_timing.mfu_fields(flops, seconds, config.model.dtype),
    }


def define_flags() -> None:
    """The command-line flags (defined only when run as a script, so that `gpu_suite`
    can import every benchmark module)."""
    flags.DEFINE_integer("steps", 2, "Timed steps after the first (warm-up) one.")
    flags.DEFINE_bool("mutual", False, "Two mutually trained models in one step.")
    flags.DEFINE_integer("batch_size", 128, "Global P x K batch (K = 4).")
    flags.DEFINE_float("local_weight", 0.0, "Local triplet weight (README runs: 0).")
    flags.DEFINE_enum("dtype", "float32", list(config_lib.DTYPES), "model.dtype.")


def main(argv) -> None:
    del argv
    args = flags.FLAGS
    arg = "market1501,mutual" if args.mutual else "market1501"
    config = load_config(
        arg, dtype=args.dtype, batch_size=args.batch_size, local_weight=args.local_weight
    )
    result = measure(config, steps=args.steps, label=arg)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    models = 2 if args.mutual else 1
    print(
        f"| {models} x ResNet-50, 256x128, batch {result['batch']}, local w {args.local_weight:g} "
        f"| {jax.devices()[0].platform} x {jax.device_count()} | {result['compile_seconds']:.1f} "
        f"| {result['seconds_per_step']:.2f} | {result['images_per_second']:.1f} "
        f"| {result['loss']:.3f} | {load:.1f} | {platform.processor() or platform.machine()} |"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
