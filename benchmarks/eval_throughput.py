"""Evaluation throughput: images/s of the eval image encoder and captions/s of the text encoder.

The encoders are the evaluation's own jitted, sharded functions (`ssan_eval._encoders`,
`aptm_eval._encoders`, `alignedreid_eval._encoder`: eval mode, variables replicated, the batch
split on 'data'), at the sizes of the paper configs (`configs/ssan.py:cuhk_pedes`: ResNet-50 at
384 x 128 and the BiLSTM over T = 100 words; `configs/aptm.py:cuhk_pedes`: Swin-B at 384 x 128
and the 6-layer BERT text encoder over T = 56 tokens; `configs/alignedreid.py:market1501`:
ResNet-50 at 256 x 128), with the configs' eval batch sizes unless given. Inputs are random
(no decoding or tokenising: the input pipeline has its own benchmark) and the weights freshly
initialised (they do not change the speed). Compile = `lower().compile()`; s/batch = median of
the timed calls after one warm-up call. APTM's second stage (ITM over the top k_test) is not
timed here.

Usage (from the repository root):
  .venv/bin/python -m benchmarks.eval_throughput --model=ssan
  .venv/bin/python -m benchmarks.eval_throughput --model=aptm --dtype=bfloat16 --batch_size=256
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import app, flags

from benchmarks import alignedreid_train_step, aptm_train_step, ssan_train_step, step_timing
from reid_jax import config_lib, sharding
from reid_jax.training.state import model_variables
from reid_jax.training.tasks import aptm_eval, ssan_eval

MODELS = ("ssan", "alignedreid", "aptm")
# The paper config of each model (the configs' argument).
PAPER_CONFIGS = {"ssan": "cuhk_pedes", "alignedreid": "market1501", "aptm": "cuhk_pedes"}
# ID classifier sizes (CUHK-PEDES, Market-1501); they do not enter the encoders.
NUM_CLASSES = {"ssan": 11000, "alignedreid": 751}


def load_model(name: str, arg: str, dtype: str = "float32", num_classes: int = 0):
    """(config, flax module) of `name` for the config argument `arg` (e.g. 'cuhk_pedes,smoke').

    Args:
      name: one of MODELS.
      arg: the config file's argument.
      dtype: model.dtype.
      num_classes: ID classes of SSAN / AlignedReID (0 = NUM_CLASSES[name]); unused for APTM.
    """
    num_classes = num_classes or NUM_CLASSES.get(name, 0)
    if name == "ssan":
        config = ssan_train_step.load_config(arg, dtype=dtype)
        return config, ssan_train_step.step_parts(config, num_classes)[1]
    if name == "alignedreid":
        config = alignedreid_train_step.load_config(arg, dtype=dtype)
        return config, alignedreid_train_step.step_parts(config, num_classes)[1]
    config, _ = aptm_train_step.load_config(arg, 0, dtype=dtype)
    return config, aptm_train_step.step_parts(config, aptm_variant(arg))[1]


def aptm_variant(arg: str) -> str:
    """The DATA_SIZES entry of an APTM config argument (it only sets the schedule's length)."""
    variant = arg.split(",")[0]
    return variant if variant in aptm_train_step.DATA_SIZES else "cuhk_pedes"


def encoder_inputs(
    name: str,
    model: Any,
    config: Any,
    mesh: jax.sharding.Mesh,
    *,
    batch_size: int = 0,
    text_batch_size: int = 0,
) -> dict[str, tuple[Callable, dict[str, jax.Array], str]]:
    """The evaluation's encoders of a model with one random global batch each.

    Args:
      name: one of MODELS.
      model: its flax module.
      config: its config (data sizes, eval batch sizes).
      mesh: device mesh.
      batch_size: images per call; 0 = config.eval.batch_size.
      text_batch_size: captions per call; 0 = the config's (APTM: eval.text_batch_size).

    Returns:
      {'image' | 'text': (jitted encoder(variables, batch), batch, unit)}; unit 'images' or
      'captions'. AlignedReID has no text encoder.
    """
    rng = np.random.default_rng(0)
    shards = sharding.data_parallel_size(mesh)
    images = -(-(batch_size or config.eval.batch_size) // shards) * shards
    height, width = config.data.image_size
    image_batch = {"image": rng.normal(size=(images, height, width, 3)).astype(np.float32)}
    if name == "alignedreid":
        from reid_jax.training.tasks import alignedreid_eval

        encode = alignedreid_eval._encoder(model, mesh, bool(config.model.normalize_features))
        return {"image": (encode, sharding.host_batch_to_global(image_batch, mesh), "images")}
    if name == "ssan":
        encode_images, encode_texts = ssan_eval._encoders(model, mesh)
        texts = text_batch_size or config.eval.batch_size
        length = config.data.max_length
        text_batch = {
            "caption": rng.integers(1, config.model.vocab_size, (texts, length)).astype(np.int32),
            "length": rng.integers(length // 2, length + 1, texts).astype(np.int32),
        }
    else:
        encode_images, encode_texts, _ = aptm_eval._encoders(model, mesh)
        texts = text_batch_size or config.eval.text_batch_size
        ids, mask = aptm_train_step.random_captions(rng, texts, config.data.max_tokens, 8)
        text_batch = {"input_ids": ids, "attention_mask": mask}
    return {
        "image": (encode_images, sharding.host_batch_to_global(image_batch, mesh), "images"),
        "text": (encode_texts, sharding.host_batch_to_global(text_batch, mesh), "captions"),
    }


def time_encoder(
    encoder: Callable,
    variables: Any,
    batch: dict[str, jax.Array],
    *,
    repeats: int,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Compile time, seconds per call and rows per second of one encoder on one batch.

    Args:
      encoder: a `jax.jit` function of (variables, batch).
      variables: model variables (replicated).
      batch: a global batch dict of [B, ...] arrays.
      repeats: most timed calls after one warm-up call.
      budget_s: stop once the timed calls took this long (at least one runs).

    Returns:
      {'batch', 'compile_seconds', 'seconds_per_batch', 'batch_times', 'per_second'}.
    """
    rows = len(next(iter(batch.values())))
    start = time.perf_counter()
    compiled = encoder.lower(variables, batch).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(variables, batch))
    times: list[float] = []
    while len(times) < max(repeats, 1):
        start = time.perf_counter()
        jax.block_until_ready(compiled(variables, batch))
        times.append(time.perf_counter() - start)
        if budget_s is not None and sum(times) >= budget_s:
            break
    seconds = float(np.median(times))
    return {
        "batch": rows,
        "compile_seconds": round(compile_seconds, 1),
        "seconds_per_batch": round(seconds, 4),
        "batch_times": [round(t, 4) for t in times],
        "per_second": round(rows / seconds, 1),
    }


def measure(
    name: str,
    model: Any,
    config: Any,
    variables: Any,
    mesh: jax.sharding.Mesh,
    kind: str,
    *,
    repeats: int,
    budget_s: float | None = None,
    batch_size: int = 0,
    text_batch_size: int = 0,
    label: str = "",
) -> dict[str, Any]:
    """Throughput of one encoder ('image' or 'text') of a model, as a result dict.

    Args:
      name, model, config, mesh, batch_size, text_batch_size: as for `encoder_inputs`.
      variables: the model's variables (replicated).
      kind: 'image' or 'text'.
      repeats, budget_s: as for `time_encoder`.
      label: the config name the result carries.
    """
    encoder, batch, unit = encoder_inputs(
        name, model, config, mesh, batch_size=batch_size, text_batch_size=text_batch_size
    )[kind]
    result = {
        "device": step_timing.device_description(),
        "config": label,
        "encoder": f"{name} {kind}",
        "dtype": config.model.dtype,
        "unit": unit,
    }
    result.update(time_encoder(encoder, variables, batch, repeats=repeats, budget_s=budget_s))
    result["device_peak_memory_gib"] = step_timing.device_peak_memory_gib()
    return result


def init_variables(name: str, arg: str, config: Any, mesh: jax.sharding.Mesh, num_classes: int = 0):
    """Freshly initialised, replicated eval variables ({'params', 'batch_stats'?}) of the model
    `load_model(name, arg, ...)` built."""
    if name == "ssan":
        init = ssan_train_step.make_init(config, num_classes or NUM_CLASSES[name], mesh)
    elif name == "alignedreid":
        init = alignedreid_train_step.make_init(config, num_classes or NUM_CLASSES[name], mesh)
    else:
        init = aptm_train_step.make_init(config, aptm_variant(arg), mesh)
    return model_variables(init(jax.random.key(0)))


def define_flags() -> None:
    """The command-line flags (defined only when run as a script, so that `gpu_suite` can
    import every benchmark module)."""
    flags.DEFINE_enum("model", "ssan", MODELS, "Which model's encoders.")
    flags.DEFINE_string("config_arg", "", "The config's argument ('' = PAPER_CONFIGS[model]).")
    flags.DEFINE_enum("dtype", "float32", list(config_lib.DTYPES), "model.dtype.")
    flags.DEFINE_integer("batch_size", 0, "Images per call (0 = config.eval.batch_size).")
    flags.DEFINE_integer("text_batch_size", 0, "Captions per call (0 = the config's).")
    flags.DEFINE_integer("repeats", 10, "Timed calls after the warm-up call.")


def main(argv):
    del argv
    args = flags.FLAGS
    arg = args.config_arg or PAPER_CONFIGS[args.model]
    config, model = load_model(args.model, arg, args.dtype)
    mesh = sharding.make_mesh(config.mesh)
    variables = init_variables(args.model, arg, config, mesh)
    kinds = ("image",) if args.model == "alignedreid" else ("image", "text")
    for kind in kinds:
        result = measure(
            args.model,
            model,
            config,
            variables,
            mesh,
            kind,
            repeats=args.repeats,
            batch_size=args.batch_size,
            text_batch_size=args.text_batch_size,
            label=arg,
        )
        print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
