"""Compile time, seconds per step and images/s of the full-size SSAN train step.

The step is the one the training loop runs (`run_setup.make_train_step` over the SSAN task, with the
paper's optimizer), at the paper's sizes by default (`configs/ssan.py:cuhk_pedes`: ResNet-50,
384 x 128, batch 64, K = 6, D = 1024, vocab 5000, BiLSTM 2048, T = 100) and C = 11000
classes, on random inputs. On a GPU/TPU it also reports the model FLOP utilisation.

FLOPs: XLA's `cost_analysis` counts a while-loop body once, so it misses T - 1 of the BiLSTM's
T steps (the largest matmuls of the step, at full length T); `tflop_per_step` adds them back
analytically (`recurrent_flops_not_counted`), `xla_tflop_per_step` is XLA's raw count.
Memory: XLA's buffer plan from `memory_analysis` (temporaries, arguments) and the process's
peak resident set size (`ru_maxrss`), which also holds the host batch and the runtime.
`--remat` sets `config.model.remat`; the step is compiled with `xla_options.train_step_options`
(`--nocpu_remat_options`: without its remat option, i.e. XLA's barrier pass runs, under which
remat saves nothing on CPU).

Usage (from the repository root):
  /work/venv/bin/python -m benchmarks.ssan_train_step --steps=3
  /work/venv/bin/python -m benchmarks.ssan_train_step --remat=none --compile_only
  /work/venv/bin/python -m benchmarks.ssan_train_step --config_arg=smoke --num_classes=300
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import app, flags

from benchmarks import step_timing
from reid_jax import sharding
from reid_jax.models.ssan.model import REMAT_POLICIES
from reid_jax.training import optim, run_setup, xla_options
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import ssan
from reid_jax.training.tasks.base import TrainDataInfo

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "ssan.py"


def load_config(arg: str, *, dtype: str = "float32", batch_size: int = 0, remat: str | None = None):
    """configs/ssan.py's config for `arg`, unlocked, with a dummy dataset root.

    Args:
      arg: the config argument, e.g. 'cuhk_pedes' or 'cuhk_pedes,smoke'.
      dtype: model.dtype.
      batch_size: global batch; 0 keeps the config's.
      remat: model.remat; None keeps the config's.
    """
    spec = importlib.util.spec_from_file_location("ssan_config", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.data.root = config.data.root or "unused"
    config.model.dtype = dtype
    if remat is not None:
        config.model.remat = remat
    config.train.batch_size = batch_size or config.train.batch_size
    return config


def random_batch(
    config, batch_size: int, num_classes: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A batch of the shapes the SSAN loader yields (images already normalised)."""
    height, width = config.data.image_size
    length = config.data.max_length
    vocab = config.model.vocab_size

    def captions():
        return rng.integers(1, vocab, (batch_size, length)).astype(np.int32)

    return {
        "image": rng.uniform(-1, 1, (batch_size, height, width, 3)).astype(np.float32),
        "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
        "caption": captions(),
        "length": rng.integers(length // 2, length + 1, batch_size).astype(np.int32),
        "partner_caption": captions(),
        "partner_length": rng.integers(length // 2, length + 1, batch_size).astype(np.int32),
    }


def recurrent_flops_not_counted(config, batch_size: int) -> float:
    """BiLSTM matmul FLOPs of the T - 1 scan steps XLA's cost analysis leaves out.

    The text batch is 4B sequences (captions and partners through both embedding streams).
    Each forward step multiplies [2, 4B, E] by [2, E, 4H] and [2, 4B, H] by [2, H, 4H]; each
    backward step does twice that (input and weight gradients). XLA counts one step of each
    scan. This is the cost at full length T: the step skips positions past the batch's
    longest caption (`backbones.bilstm`), so with real captions it runs fewer.

    Args:
      config: the SSAN config (model.embed_dim, model.lstm_hidden, data.max_length).
      batch_size: global batch B.

    Returns:
      The missing FLOPs of one train step.
    """
    hidden = config.model.lstm_hidden
    forward = 2 * 2 * (4 * batch_size) * (config.model.embed_dim + hidden) * (4 * hidden)
    return (config.data.max_length - 1) * 3 * forward


def step_parts(config, num_classes: int):
    """(data facts, model, optimizer, lr schedule) of the step for `config`; nothing compiled."""
    info = TrainDataInfo(
        num_examples=1064 * config.train.batch_size, steps_per_epoch=1064, num_classes=num_classes
    )
    model = ssan.create_model(config, info)
    shapes = jax.eval_shape(lambda r: ssan.init_variables(model, r, config), jax.random.key(0))
    total = config.train.num_epochs * info.steps_per_epoch
    tx = optim.make_optimizer(
        config.optim, shapes["params"], steps_per_epoch=1064, total_steps=total
    )
    schedule = optim.make_schedule(config.optim, steps_per_epoch=1064, total_steps=total)
    return info, model, tx, schedule


def make_init(config, num_classes: int, mesh: jax.sharding.Mesh):
    """Jitted rng -> step-0 TrainState, replicated on `mesh`.

    The variables do not depend on `model.dtype` (parameters and BatchNorm statistics are float32
    whatever the compute dtype), so one init serves the step of every dtype.
    """
    _, model, tx, _ = step_parts(config, num_classes)
    return jax.jit(
        lambda r: create_train_state(ssan.init_variables(model, r, config), tx),
        out_shardings=sharding.replicated(mesh),
    )


class CompiledStep(NamedTuple):
    """The compiled train step and what it runs on (from `compile_step`)."""

    compiled: Any
    state: Any
    batch: dict[str, jax.Array]
    key: jax.Array
    num_params: int
    init_seconds: float
    compile_seconds: float


def compile_step(
    config, num_classes: int, host_batch: dict[str, np.ndarray], *, compiler_options, init=None
) -> CompiledStep:
    """Initialises the state and compiles the loop's SSAN train step for `host_batch`.

    Args:
      config: from `load_config`.
      num_classes: C, the size of the ID classifiers.
      host_batch: this process's share of one batch (NumPy, the loader's fields).
      compiler_options: XLA options for the step (`xla_options.train_step_options`); they add
        to those `make_train_step` already jits with.
      init: `make_init`'s function to reuse; None builds one.
    """
    mesh = sharding.make_mesh(config.mesh)
    info, model, tx, schedule = step_parts(config, num_classes)
    init = init or make_init(config, num_classes, mesh)
    start = time.perf_counter()
    state = jax.block_until_ready(init(jax.random.key(0)))
    init_seconds = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_timing.progress(f"initialised {num_params / 1e6:.1f} M parameters in {init_seconds:.1f} s")
    step = run_setup.make_train_step(ssan, model, tx, config, info, mesh, schedule)
    batch = sharding.host_batch_to_global(host_batch, mesh)
    key = step_timing.replicated_key(1, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch, key).compile(compiler_options=compiler_options)
    compile_seconds = time.perf_counter() - start
    return CompiledStep(compiled, state, batch, key, num_params, init_seconds, compile_seconds)


def measure(
    config,
    *,
    num_classes: int,
    steps: int,
    budget_s: float | None = None,
    cpu_remat_options: bool = True,
    compile_only: bool = False,
    label: str = "cuhk_pedes",
    init=None,
) -> dict:
    """Initialises, compiles and times the SSAN train step of `config`.

    Args:
      config: from `load_config`.
      num_classes: C, the size of the ID classifiers.
      steps: most timed steps after the warm-up step.
      budget_s: stop timing once the timed steps took this long (at least one runs).
      cpu_remat_options: compile with the remat option of `xla_options.train_step_options`
        (False: that option reset; the step's jit carries it, so it is overridden, not omitted).
      compile_only: stop after compiling (no step runs; no timing fields).
      label: the config name the result carries.
      init: `make_init`'s function to reuse (its compilation is not timed again); None builds
        one ('init_seconds' then includes its compilation).

    Returns:
      The result fields (JSON-serialisable), see the module docstring.
    """
    batch_size = config.train.batch_size
    # This process's share of the global batch (all of it with one process).
    host_batch = random_batch(
        config, batch_size // jax.process_count(), num_classes, np.random.default_rng(0)
    )
    options = xla_options.train_step_options(ssan, config) or {}
    if not cpu_remat_options:  # later options override the jit's; "" disables no pass
        options = {**options, **{name: "" for name in xla_options.CPU_REMAT_OPTIONS}}
    options = options or None
    prepared = compile_step(config, num_classes, host_batch, compiler_options=options, init=init)
    compiled, state, batch, key = prepared.compiled, prepared.state, prepared.batch, prepared.key
    num_params, init_seconds = prepared.num_params, prepared.init_seconds
    compile_seconds = prepared.compile_seconds
    xla_flops = step_timing.xla_flops(compiled)
    flops = xla_flops + recurrent_flops_not_counted(config, batch_size)
    temp_gib, argument_gib = step_timing.memory_gib(compiled)
    step_timing.progress(
        f"remat={config.model.remat}, options={options}: compiled in {compile_seconds:.1f} s; "
        f"XLA temp buffers {temp_gib:.2f} GiB + arguments {argument_gib:.2f} GiB; "
        f"{flops / 1e12:.2f} TFLOP per step (XLA counts {xla_flops / 1e12:.2f}); "
        f"peak RSS so far {step_timing.peak_rss_gib():.2f} GiB"
    )
    result = {
        "device": step_timing.device_description(),
        "config": label,
        "dtype": config.model.dtype,
        "remat": config.model.remat,
        "compiler_options": options,
        "batch": batch_size,
        "num_classes": num_classes,
        "params_millions": round(num_params / 1e6, 1),
        "init_seconds": round(init_seconds, 1),
        "compile_seconds": round(compile_seconds, 1),
        "tflop_per_step": step_timing.significant(flops / 1e12),
        "xla_tflop_per_step": step_timing.significant(xla_flops / 1e12),
        "flop_note": "XLA's count + the BiLSTM matmuls of the T - 1 scan steps it "
        "counts once (recurrent_flops_not_counted)",
        "all_reduce_ops": step_timing.all_reduce_ops(compiled),
        "temp_memory_gib": round(temp_gib, 2),
        "argument_memory_gib": round(argument_gib, 2),
    }
    if compile_only:
        return result

    result.update(
        step_timing.timed_fields(
            compiled,
            state,
            batch,
            key,
            steps=steps,
            budget_s=budget_s,
            batch_size=batch_size,
            flops=flops,
            dtype=config.model.dtype,
        )
    )
    return result


def define_flags() -> None:
    """The command-line flags (defined only when run as a script, so that `gpu_suite`
    can import every benchmark module)."""
    flags.DEFINE_string("config_arg", "cuhk_pedes", "Argument of configs/ssan.py.")
    flags.DEFINE_integer("num_classes", 11000, "C (11000 = CUHK-PEDES).")
    flags.DEFINE_integer("steps", 3, "Timed steps after the first (warm-up) one.")
    flags.DEFINE_string("dtype", "float32", "model.dtype: float32 or bfloat16.")
    flags.DEFINE_integer("batch_size", 0, "Global batch (0 = the config's).")
    flags.DEFINE_enum("remat", None, list(REMAT_POLICIES), "model.remat (default: the config's).")
    flags.DEFINE_bool(
        "cpu_remat_options", True, "Compile with the CPU remat option (False: reset it)."
    )
    flags.DEFINE_bool(
        "compile_only", False, "Stop after compiling (compile time and XLA's memory estimate)."
    )


def main(argv):
    del argv
    args = flags.FLAGS
    config = load_config(
        args.config_arg, dtype=args.dtype, batch_size=args.batch_size, remat=args.remat
    )
    result = measure(
        config,
        num_classes=args.num_classes,
        steps=args.steps,
        cpu_remat_options=args.cpu_remat_options,
        compile_only=args.compile_only,
        label=args.config_arg,
    )
    if not args.compile_only:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
