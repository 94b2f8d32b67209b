"""Measurements shared by the full-size train-step benchmarks (`ssan_train_step`,
`aptm_train_step`): XLA's FLOP count and buffer plan of a compiled step, timed steps, the
process's peak resident memory and the model FLOP utilisation on a GPU/TPU.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import jax
import numpy as np

# Dense peak FLOP/s per device for MFU (float32 column = TF32 tensor cores where they exist).
PEAK_FLOPS = {
    "H100": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "H200": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "A100": {"float32": 156e12, "bfloat16": 312e12},
}


def progress(message: str) -> None:
    """One progress line on stderr (stdout keeps only the result)."""
    print(message, file=sys.stderr, flush=True)


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, GiB (`ru_maxrss` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def xla_flops(compiled: Any) -> float:
    """FLOPs of one call of a compiled function by XLA's `cost_analysis` (NaN if absent).

    XLA counts a while-loop body once, whatever its trip count; callers add what loops miss.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def memory_gib(compiled: Any) -> tuple[float, float]:
    """(temporary buffers, arguments) of a compiled function's XLA buffer plan, GiB."""
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", float("nan"))
    arguments = getattr(memory, "argument_size_in_bytes", float("nan"))
    return temp / 2**30, arguments / 2**30


def time_steps(
    compiled: Any, state: Any, batch: Any, key: jax.Array, steps: int
) -> tuple[Any, dict[str, jax.Array], list[float]]:
    """Runs one warm-up step, then `steps` timed ones, on the same batch and key.

    Returns:
      (state after the last step, its metrics, wall seconds of each timed step).
    """
    state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return state, metrics, times


def device_description() -> str:
    """e.g. '1 x cpu (cpu)' or '8 x NVIDIA H100 80GB HBM3 (gpu)'."""
    device = jax.devices()[0]
    return f"{jax.device_count()} x {device.device_kind} ({device.platform})"


def mfu_percent(flops: float, seconds: float, dtype: str) -> float | None:
    """Achieved FLOP/s per device over the device's dense peak, percent.

    Args:
      flops: FLOPs of one step over all devices.
      seconds: wall seconds of one step.
      dtype: 'float32' or 'bfloat16' (the peak column).

    Returns:
      The percentage, or None for a device without a PEAK_FLOPS entry (e.g. a CPU).
    """
    kind = jax.devices()[0].device_kind
    peak = next((p for name, p in PEAK_FLOPS.items() if name in kind), None)
    if peak is None or not np.isfinite(flops):
        return None
    return round(100 * flops / seconds / jax.device_count() / peak[dtype], 1)
