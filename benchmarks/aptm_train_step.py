"""Compile time, seconds per step, images/s and FLOPs of the full-size APTM train step.

The step is the one the training loop runs (`run_setup.make_train_step` over `tasks/aptm.py`
with `optim.make_optimizer`'s AdamW groups and the lr schedule), at the paper's sizes of
`configs/aptm.py` (Swin-B at 384 x 128, BERT-base split 6 text + 6 cross layers, vocabulary
30522, T = 56 tokens, 214.5 M parameters), on random inputs of the shapes `AptmTrainMap`
yields (no decoding, EDA or tokenising: model + losses + optimizer only). Variants:
'cuhk_pedes' (fine-tuning: ITC, ITM, MLM and the EDA twins ITC/ITM of aptm §4.4) and
'mals_pretrain' (pre-training: ITC, ITM, MLM and the attribute terms IAC, IAM, MAM over the
54 MALS prompts). On a GPU/TPU it also reports the model FLOP utilisation.

ITM negatives, MLM/IAC means, IAM prompts and MAM images are drawn per group of
`loss.group_size` (the reference per-GPU batch: 120 fine-tuning, 150 pre-training); a batch
below that is one group (`group_size` = batch), which the output says.

FLOPs: XLA's `cost_analysis` of the compiled step, uncorrected. XLA counts a while-loop body
once, but APTM has no scan or while loop over layers (Swin blocks and BERT layers are
unrolled): the only while ops are jax's rolled threefry rounds (dropout masks, ITM/IAM
sampling; integer hashing, no matmul). The output checks this from the optimised HLO
(`while_loops`, `rng_while_loops`). With remat the count includes the recomputed forward
passes, so the MFU is of the FLOPs the device executes.
Memory: XLA's buffer plan (`memory_analysis`) and the process's peak resident set size.
`--remat` sets `config.model.remat`; on CPU the step compiles with `aptm.compiler_options`
(as SSAN: without it remat saves nothing on XLA:CPU).

Usage (from the repository root):
  .venv/bin/python -m benchmarks.aptm_train_step --batch_size=8 --steps=2
  .venv/bin/python -m benchmarks.aptm_train_step --variant=mals_pretrain --compile_only
  .venv/bin/python -m benchmarks.aptm_train_step --batch_size=120 --dtype=bfloat16  # a GPU
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from benchmarks import step_timing
from reid_jax import config_lib, sharding
from reid_jax.text import masking
from reid_jax.training import optim, run_setup, xla_options
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import aptm
from reid_jax.training.tasks.base import TrainDataInfo

# Training pairs (one per caption) and identities of each variant's data (aptm §1.1-1.2);
# they only set the schedule's epoch length.
DATA_SIZES = {"cuhk_pedes": (68126, 11003), "mals_pretrain": (1510330, 0)}
# Largest batch run to completion on the shared 24 GiB, 2-core CPU (benchmarks/RESULTS.md).
CPU_BATCH = 8
VOCAB_SIZE = 30522
PAD_ID, CLS_ID, SEP_ID = 0, 101, 102
NUM_PROMPTS, PROMPT_TOKENS, NUM_ATTRIBUTES = 54, 10, 27  # MALS prompt set (aptm §2.2)


CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "aptm.py"


def default_batch_size(arg: str) -> int:
    """The batch of `--batch_size=0`: the smoke config's own with 'smoke' in `arg`, else
    CPU_BATCH on a CPU and loss.group_size (the reference per-GPU batch) per device elsewhere."""
    config = config_lib.load_config_file(f"{CONFIG_FILE}:{arg}")
    if "smoke" in arg.split(","):
        return config.train.batch_size
    if jax.devices()[0].platform == "cpu":
        return CPU_BATCH
    return config.loss.group_size * jax.device_count()


def load_config(arg: str, batch_size: int, dtype: str = "float32", remat: bool | None = None):
    """configs/aptm.py's config for `arg` at `batch_size`, with `group_size` <= batch.

    Args:
      arg: the config argument, a variant of DATA_SIZES (+ ',smoke').
      batch_size: global batch; 0 = `default_batch_size(arg)`.
      dtype: model.dtype.
      remat: model.remat; None keeps the config's.

    Returns:
      (config, note on the group size or None).
    """
    batch_size = batch_size or default_batch_size(arg)
    config = config_lib.load_config_file(f"{CONFIG_FILE}:{arg}")
    config.model.dtype = dtype
    if remat is not None:
        config.model.remat = remat
    config.train.batch_size = batch_size
    note = None
    if batch_size < config.loss.group_size:
        note = (
            f"batch {batch_size} < the config's loss.group_size {config.loss.group_size}: "
            f"group_size set to {batch_size} (one ITM/MLM/attribute group)"
        )
        config.loss.group_size = batch_size
    elif batch_size % config.loss.group_size:
        raise ValueError(f"loss.group_size {config.loss.group_size} must divide the batch")
    return config, note


def random_captions(
    rng: np.random.Generator, rows: int, length: int, min_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] random word ids [SEP] [PAD]... of random lengths: (ids, mask) int32 [rows, length]."""
    ids = np.full((rows, length), PAD_ID, np.int32)
    for row, tokens in enumerate(rng.integers(min_tokens, length - 2, rows, endpoint=True)):
        ids[row, 0] = CLS_ID
        ids[row, 1 : tokens + 1] = rng.integers(1000, VOCAB_SIZE, tokens)
        ids[row, tokens + 1] = SEP_ID
    return ids, (ids != PAD_ID).astype(np.int32)


def _mask(ids: np.ndarray, rng: np.random.Generator):
    """MLM/MAM masks as the loader draws them (no '##' pieces among random ids)."""
    continuation = np.zeros(VOCAB_SIZE, bool)
    return masking.mask_batch(ids, continuation, rng, vocab_size=VOCAB_SIZE)


def random_batch(
    config, batch_size: int, prompt_ids: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A global batch of the keys and shapes `AptmTrainMap` yields (images normalised).

    Labels come in pairs (two captions per identity), as CUHK-PEDES pairs do.
    """
    height, width = config.data.image_size
    length = config.data.max_tokens
    input_ids, attention_mask = random_captions(rng, batch_size, length, 8)
    mlm_ids, mlm_positions, mlm_labels = _mask(input_ids, rng)
    batch = {
        "image": rng.normal(size=(batch_size, height, width, 3)).astype(np.float32),
        "label": np.repeat(rng.permutation(10**5)[: (batch_size + 1) // 2], 2)[:batch_size],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mlm_ids": mlm_ids,
        "mlm_positions": mlm_positions,
        "mlm_labels": mlm_labels,
    }
    batch["label"] = batch["label"].astype(np.int32)
    weights = config.loss.weights
    if "itc_eda" in weights or "itm_eda" in weights:
        batch["eda_ids"], batch["eda_mask"] = random_captions(rng, batch_size, length, 8)
    if any(t in weights for t in ("iac", "iam", "mam")):
        batch["attributes"] = rng.integers(-1, 1, (batch_size, NUM_ATTRIBUTES), endpoint=True)
        batch["attributes"] = batch["attributes"].astype(np.int32)
        masks = [_mask(prompt_ids, rng) for _ in range(batch_size)]  # one prompt set each
        for index, name in enumerate(("mam_ids", "mam_positions", "mam_labels")):
            batch[name] = np.stack([m[index] for m in masks])
    return batch


def data_info(variant: str, batch_size: int, prompt_ids: np.ndarray) -> TrainDataInfo:
    """The TrainDataInfo `aptm.make_train_data` would report for the variant's data."""
    num_examples, num_identities = DATA_SIZES[variant]
    extras = {
        "vocab_size": VOCAB_SIZE,
        "pad_id": PAD_ID,
        "num_identities": num_identities,
        "prompt_ids": prompt_ids.tolist(),
    }
    return TrainDataInfo(
        num_examples=num_examples,
        steps_per_epoch=num_examples // batch_size,
        num_classes=0,
        extras=extras,
    )


def prompt_ids() -> np.ndarray:
    """The random MALS-sized prompt set [NUM_PROMPTS, PROMPT_TOKENS] int32 of every batch."""
    return random_captions(np.random.default_rng(0), NUM_PROMPTS, PROMPT_TOKENS, 3)[0]


def step_parts(config, variant: str):
    """(data facts, model, optimizer, lr schedule) of the step for `config`; nothing compiled."""
    info = data_info(variant, config.train.batch_size, prompt_ids())
    model = aptm.create_model(config, info)
    shapes = jax.eval_shape(lambda r: aptm.init_variables(model, r, config), jax.random.key(0))
    total = config.train.num_epochs * info.steps_per_epoch
    steps_per_epoch = info.steps_per_epoch
    tx = optim.make_optimizer(
        config.optim, shapes["params"], steps_per_epoch=steps_per_epoch, total_steps=total
    )
    schedule = optim.make_schedule(config.optim, steps_per_epoch=steps_per_epoch, total_steps=total)
    return info, model, tx, schedule


def make_init(config, variant: str, mesh: jax.sharding.Mesh):
    """Jitted rng -> step-0 TrainState, replicated on `mesh` (independent of `model.dtype`:
    parameters stay float32 whatever the compute dtype)."""
    _, model, tx, _ = step_parts(config, variant)
    return jax.jit(
        lambda r: create_train_state(aptm.init_variables(model, r, config), tx),
        out_shardings=sharding.replicated(mesh),
    )


def measure(
    config,
    variant: str,
    *,
    steps: int,
    budget_s: float | None = None,
    compile_only: bool = False,
    group_note: str | None = None,
    init=None,
    label: str = "",
) -> dict:
    """Initialises, compiles and times the APTM train step of `config`.

    Args:
      config: from `load_config`.
      variant: the data of DATA_SIZES the schedule's epoch length comes from.
      steps: most timed steps after the warm-up step.
      budget_s: stop timing once the timed steps took this long (at least one runs).
      compile_only: stop after compiling (no step runs; no timing fields).
      group_note: `load_config`'s note, passed into the result.
      init: `make_init`'s function to reuse (its compilation is not timed again); None builds
        one ('init_seconds' then includes its compilation).
      label: the config name the result carries ('' = `variant`).

    Returns:
      The result fields (JSON-serialisable), see the module docstring.
    """
    batch_size = config.train.batch_size
    mesh = sharding.make_mesh(config.mesh)
    info, model, tx, schedule = step_parts(config, variant)
    init = init or make_init(config, variant, mesh)
    start = time.perf_counter()
    state = jax.block_until_ready(init(jax.random.key(config.seed)))
    init_seconds = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_timing.progress(
        f"initialised {num_params / 1e6:.1f} M parameters in {init_seconds:.1f} s"
        + (f"; {group_note}" if group_note else "")
    )

    step = run_setup.make_train_step(aptm, model, tx, config, info, mesh, schedule)
    data_rng = np.random.default_rng(1)
    batch = sharding.host_batch_to_global(
        random_batch(config, batch_size // jax.process_count(), prompt_ids(), data_rng), mesh
    )
    key = step_timing.replicated_key(1, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()  # the jit carries the step options
    compile_seconds = time.perf_counter() - start
    options = xla_options.train_step_options(aptm, config)
    flops = step_timing.xla_flops(compiled)
    loops, rng_loops = step_timing.while_loops(compiled)
    temp_gib, argument_gib = step_timing.memory_gib(compiled)
    step_timing.progress(
        f"remat={config.model.remat}, options={options}: compiled in {compile_seconds:.1f} s; "
        f"XLA temp buffers {temp_gib:.2f} GiB + arguments {argument_gib:.2f} GiB; "
        f"{flops / 1e12:.2f} TFLOP per step, {loops} while loops ({rng_loops} RNG); "
        f"peak RSS so far {step_timing.peak_rss_gib():.2f} GiB"
    )
    result = {
        "device": step_timing.device_description(),
        "config": label or variant,
        "dtype": config.model.dtype,
        "remat": config.model.remat,
        "compiler_options": options,
        "batch": batch_size,
        "group_size": config.loss.group_size,
        "group_size_note": group_note,
        "terms": sorted(config.loss.weights),
        "params_millions": round(num_params / 1e6, 1),
        "init_seconds": round(init_seconds, 1),
        "compile_seconds": round(compile_seconds, 1),
        "tflop_per_step": step_timing.significant(flops / 1e12),
        "xla_tflop_per_step": step_timing.significant(flops / 1e12),
        "flop_note": step_timing.flop_note(loops, rng_loops),
        "while_loops": loops,
        "rng_while_loops": rng_loops,
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
    flags.DEFINE_enum("variant", "cuhk_pedes", list(DATA_SIZES), "Variant of configs/aptm.py.")
    flags.DEFINE_integer("steps", 3, "Timed steps after the first (warm-up) one.")
    flags.DEFINE_enum("dtype", "float32", list(config_lib.DTYPES), "model.dtype.")
    flags.DEFINE_integer(
        "batch_size",
        0,
        f"Global batch; 0 = as large as fits: {CPU_BATCH} on a CPU (the 24 GiB machine), else "
        "loss.group_size (the reference per-GPU batch) per device.",
    )
    flags.DEFINE_bool("remat", None, "model.remat (default: the config's, True).")
    flags.DEFINE_bool(
        "compile_only", False, "Stop after compiling (compile time and XLA's memory estimate)."
    )


def main(argv):
    del argv
    args = flags.FLAGS
    config, group_note = load_config(
        args.variant, args.batch_size, dtype=args.dtype, remat=args.remat
    )
    result = measure(
        config,
        args.variant,
        steps=args.steps,
        compile_only=args.compile_only,
        group_note=group_note,
    )
    if not args.compile_only:
        print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
