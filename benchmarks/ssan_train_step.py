"""Compile time, seconds per step and images/s of the full-size SSAN train step.

The step is the one the training loop runs (`run_setup.make_train_step` over the SSAN task, with the
paper's optimizer), at the paper's sizes by default (`configs/ssan.py:cuhk_pedes`: ResNet-50,
384 x 128, batch 64, K = 6, D = 1024, vocab 5000, BiLSTM 2048, T = 100) and C = 11000
classes, on random inputs. On a GPU/TPU it also reports the model FLOP utilisation.

FLOPs: XLA's `cost_analysis` counts a while-loop body once, so it misses T - 1 of the BiLSTM's
T recurrent steps (the largest matmuls of the step); `tflop_per_step` adds them back
analytically (`recurrent_flops_not_counted`), `xla_tflop_per_step` is XLA's raw count.
Memory: XLA's buffer plan from `memory_analysis` (temporaries, arguments) and the process's
peak resident set size (`ru_maxrss`), which also holds the host batch and the runtime.
`--remat` sets `config.model.remat`; the step is compiled with `ssan.compiler_options`
(`--nocpu_remat_options`: with XLA's defaults, under which remat saves nothing on CPU).

Usage (from the repository root):
  /work/venv/bin/python -m benchmarks.ssan_train_step --steps=3
  /work/venv/bin/python -m benchmarks.ssan_train_step --remat=none --compile_only
  /work/venv/bin/python -m benchmarks.ssan_train_step --config_arg=smoke --num_classes=300
"""

from __future__ import annotations

import importlib.util
import json
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import step_timing
from reid_jax import sharding
from reid_jax.models.ssan.model import REMAT_POLICIES
from reid_jax.training import optim, run_setup
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import ssan
from reid_jax.training.tasks.base import TrainDataInfo

_CONFIG_ARG = flags.DEFINE_string("config_arg", "cuhk_pedes", "Argument of configs/ssan.py.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 11000, "C (11000 = CUHK-PEDES).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps after the first (warm-up) one.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "model.dtype: float32 or bfloat16.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Global batch (0 = the config's).")
_REMAT = flags.DEFINE_enum(
    "remat", None, list(REMAT_POLICIES), "model.remat (default: the config's)."
)
_CPU_REMAT_OPTIONS = flags.DEFINE_bool(
    "cpu_remat_options", True, "Compile with ssan.compiler_options (False: XLA defaults)."
)
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Stop after compiling (compile time and XLA's memory estimate)."
)


def load_config(arg: str):
    """configs/ssan.py's config for `arg`, unlocked, with a dummy dataset root."""
    spec = importlib.util.spec_from_file_location("ssan_config", "configs/ssan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.data.root = config.data.root or "unused"
    return config


def random_batch(config, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A global batch of the shapes the SSAN loader yields (images already normalised)."""
    height, width = config.data.image_size
    length = config.data.max_length
    vocab = config.model.vocab_size

    def captions():
        return rng.integers(1, vocab, (batch_size, length)).astype(np.int32)

    return {
        "image": rng.uniform(-1, 1, (batch_size, height, width, 3)).astype(np.float32),
        "label": rng.integers(0, _NUM_CLASSES.value, batch_size).astype(np.int32),
        "caption": captions(),
        "length": rng.integers(length // 2, length + 1, batch_size).astype(np.int32),
        "partner_caption": captions(),
        "partner_length": rng.integers(length // 2, length + 1, batch_size).astype(np.int32),
    }


def recurrent_flops_not_counted(config, batch_size: int) -> float:
    """BiLSTM recurrent-matmul FLOPs of the T - 1 scan steps XLA's cost analysis leaves out.

    The text batch is 4B sequences (captions and partners through both embedding streams);
    each step multiplies [2, 4B, H] by [2, H, 4H] forward and twice in the backward pass
    (input and weight gradients); the BiLSTM's remat keeps the matmul outputs, so remat adds
    no matmul here.

    Args:
      config: the SSAN config (model.lstm_hidden, data.max_length).
      batch_size: global batch B.

    Returns:
      The missing FLOPs of one train step.
    """
    hidden = config.model.lstm_hidden
    forward = 2 * 2 * (4 * batch_size) * hidden * (4 * hidden)
    return (config.data.max_length - 1) * 3 * forward


def main(argv):
    del argv
    config = load_config(_CONFIG_ARG.value)
    config.model.dtype = _DTYPE.value
    if _REMAT.value is not None:
        config.model.remat = _REMAT.value
    batch_size = _BATCH.value or config.train.batch_size
    config.train.batch_size = batch_size
    info = TrainDataInfo(
        num_examples=1064 * batch_size, steps_per_epoch=1064, num_classes=_NUM_CLASSES.value
    )
    mesh = sharding.make_mesh(config.mesh)
    model = ssan.create_model(config, info)
    replicated = sharding.replicated(mesh)
    rng = jax.random.key(0)
    shapes = jax.eval_shape(lambda r: ssan.init_variables(model, r, config), rng)
    total = config.train.num_epochs * info.steps_per_epoch
    tx = optim.make_optimizer(
        config.optim, shapes["params"], steps_per_epoch=1064, total_steps=total
    )
    schedule = optim.make_schedule(config.optim, steps_per_epoch=1064, total_steps=total)
    start = time.perf_counter()
    init = jax.jit(
        lambda r: create_train_state(ssan.init_variables(model, r, config), tx),
        out_shardings=replicated,
    )
    state = jax.block_until_ready(init(rng))
    init_seconds = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_timing.progress(f"initialised {num_params / 1e6:.1f} M parameters in {init_seconds:.1f} s")

    step = run_setup.make_train_step(ssan, model, tx, config, info, mesh, schedule)
    batch = sharding.host_batch_to_global(
        random_batch(config, batch_size, np.random.default_rng(0)), mesh
    )
    key = jax.device_put(jax.random.key(1), replicated)
    start = time.perf_counter()
    options = ssan.compiler_options(config) if _CPU_REMAT_OPTIONS.value else None
    compiled = step.lower(state, batch, key).compile(compiler_options=options)
    compile_seconds = time.perf_counter() - start
    xla_flops = step_timing.xla_flops(compiled)
    flops = xla_flops + recurrent_flops_not_counted(config, batch_size)
    temp_gib, argument_gib = step_timing.memory_gib(compiled)
    step_timing.progress(
        f"remat={config.model.remat}, options={options}: compiled in {compile_seconds:.1f} s; "
        f"XLA temp buffers {temp_gib:.2f} GiB + arguments {argument_gib:.2f} GiB; "
        f"{flops / 1e12:.2f} TFLOP per step (XLA counts {xla_flops / 1e12:.2f}); "
        f"peak RSS so far {step_timing.peak_rss_gib():.2f} GiB"
    )
    if _COMPILE_ONLY.value:
        return

    state, metrics, times = step_timing.time_steps(compiled, state, batch, key, _STEPS.value)
    seconds = float(np.median(times))
    result = {
        "device": step_timing.device_description(),
        "config": _CONFIG_ARG.value,
        "dtype": _DTYPE.value,
        "remat": config.model.remat,
        "compiler_options": options,
        "batch": batch_size,
        "num_classes": _NUM_CLASSES.value,
        "params_millions": round(num_params / 1e6, 1),
        "init_seconds": round(init_seconds, 1),
        "compile_seconds": round(compile_seconds, 1),
        "seconds_per_step": round(seconds, 3),
        "step_times": [round(t, 3) for t in times],
        "images_per_second": round(batch_size / seconds, 2),
        "tflop_per_step": round(flops / 1e12, 2),
        "xla_tflop_per_step": round(xla_flops / 1e12, 2),
        "temp_memory_gib": round(temp_gib, 2),
        "argument_memory_gib": round(argument_gib, 2),
        "peak_rss_gib": round(step_timing.peak_rss_gib(), 2),
        "loss": float(metrics["loss"]),
    }
    mfu = step_timing.mfu_percent(flops, seconds, _DTYPE.value)
    if mfu is not None:
        result["mfu_percent"] = mfu
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
