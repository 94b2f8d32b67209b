"""Where the SSAN train step's time goes on CPU, part by part, each beside its alternative.

Parts, at the full-size step's shapes (batch 8, 384 x 128 images; 4 x 8 = 32 BiLSTM sequences
of T = 100 with CUHK-PEDES-like lengths, E = 512, H = 2048):

- `trunk`: ResNet-50 forward + backward in train mode (loss = sum of the squared feature map),
  with the project's 1x1 convolutions as products (`pointwise_conv`) or as XLA convolutions,
  compiled with the train step's CPU options (`xla_options.CPU_CONVOLUTION_OPTIONS`) or
  XLA's defaults.
- `max_pool`: the stem's 3x3/2 max pool gradient at [8, 192, 64, 64], the project's
  (`backbones.max_pool`) against XLA's `select_and_scatter`.
- `bilstm`: the BiLSTM forward and forward + backward; with `--bilstm_revision REV` the
  `bilstm.py` of that git revision runs beside the current one (read with `git show`).

Every variant is compiled first; then `--rounds` rounds run each variant once in turn (so all
see the same machine load) and each figure is the median of its rounds.

Usage (from the repository root):
  python -m benchmarks.ssan_step_parts --rounds 3 [--bilstm_revision 8e8e75c]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import step_timing
from reid_jax.models.backbones import bilstm, max_pool, pointwise_conv, resnet
from reid_jax.training import xla_options

CUHK_LENGTHS = np.array([21, 19, 32, 32, 27, 29, 10, 17] * 4, np.int32)


def _compiled(fn: Callable, args: tuple, options: dict | None) -> Callable[[], None]:
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=options)
    return lambda: jax.block_until_ready(compiled(*args))


def trunk_variants(batch_size: int) -> dict[str, Callable[[], None]]:
    """ResNet-50 forward + backward under each (1x1 convolution, compiler options) pair."""
    images = jax.random.normal(jax.random.key(0), (batch_size, 384, 128, 3))
    variants = {}
    for conv_name, conv in (
        ("1x1 as products", pointwise_conv.conv_general_dilated),
        ("1x1 as convolutions", lax.conv_general_dilated),
    ):
        original = pointwise_conv.conv_general_dilated
        # ResNet's `_conv` reads the module attribute when the model is traced.
        pointwise_conv.conv_general_dilated = conv
        try:
            model = resnet.ResNet(depth=50)
            variables = model.init(jax.random.key(1), images[:1], train=False)

            def loss(params, batch_stats, images, model=model):
                out, _ = model.apply(
                    {"params": params, "batch_stats": batch_stats},
                    images,
                    train=True,
                    mutable=["batch_stats"],
                )
                return jnp.sum(out["feature_map"] ** 2)

            args = (variables["params"], variables["batch_stats"], images)
            for options_name, options in (
                ("train-step CPU options", xla_options.CPU_CONVOLUTION_OPTIONS),
                ("XLA defaults", None),
            ):
                name = f"trunk fwd+bwd, {conv_name}, {options_name}"
                variants[name] = _compiled(jax.grad(loss), args, options)
        finally:
            pointwise_conv.conv_general_dilated = original
    return variants


def max_pool_variants(batch_size: int) -> dict[str, Callable[[], None]]:
    x = jax.nn.relu(jax.random.normal(jax.random.key(2), (batch_size, 192, 64, 64)))
    weights = jnp.arange(64, dtype=jnp.float32)

    def ours(x):
        return jnp.sum(max_pool.max_pool(x, 3, 2, 1) * weights)

    def xla(x):
        pooled = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return jnp.sum(pooled * weights)

    return {
        "max_pool grad, backbones.max_pool": _compiled(jax.grad(ours), (x,), None),
        "max_pool grad, XLA select_and_scatter": _compiled(jax.grad(xla), (x,), None),
    }


def _module_at_revision(revision: str):
    source = subprocess.run(
        ["git", "show", f"{revision}:reid_jax/models/backbones/bilstm.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"bilstm_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bilstm_variants(revision: str | None) -> dict[str, Callable[[], None]]:
    inputs = jax.random.normal(jax.random.key(3), (len(CUHK_LENGTHS), 100, 512))
    modules = {"current": bilstm}
    if revision:
        modules[revision] = _module_at_revision(revision)
    variants = {}
    for label, module in modules.items():
        model = module.BiLstm(2048)
        params = model.init(jax.random.key(4), inputs[:, :3], np.minimum(CUHK_LENGTHS, 3))

        def forward(params, inputs, model=model):
            return model.apply(params, inputs, CUHK_LENGTHS)

        def loss(params, inputs, forward=forward):
            return jnp.sum(forward(params, inputs) ** 2)

        grad = jax.grad(loss, argnums=(0, 1))
        variants[f"bilstm fwd, {label}"] = _compiled(forward, (params, inputs), None)
        variants[f"bilstm fwd+bwd, {label}"] = _compiled(grad, (params, inputs), None)
    return variants


def run(rounds: int, batch_size: int, bilstm_revision: str | None) -> dict:
    variants = {}
    for build in (
        lambda: trunk_variants(batch_size),
        lambda: max_pool_variants(batch_size),
        lambda: bilstm_variants(bilstm_revision),
    ):
        variants.update(build())
    for step in variants.values():  # warm-up
        step()
    times = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
        step_timing.progress(f"round {round_index + 1}/{rounds} done")
    return {
        "device": step_timing.device_description(),
        "batch": batch_size,
        "rounds": rounds,
        "median_seconds": {name: round(statistics.median(t), 4) for name, t in times.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--bilstm_revision", default=None)
    args = parser.parse_args(argv)
    result = run(args.rounds, args.batch_size, args.bilstm_revision)
    for name, seconds in result["median_seconds"].items():
        print(f"{seconds:8.3f} s  {name}")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
