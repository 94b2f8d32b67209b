"""Measurements shared by the full-size train-step benchmarks (`ssan_train_step`,
`alignedreid_train_step`, `aptm_train_step`) and `gpu_suite`: XLA's FLOP count and buffer plan
of a compiled step, the while loops that make that count low, timed steps, the process's peak
resident and device memory and the model FLOP utilisation on a GPU.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Dense (no structured sparsity) peak FLOP/s per device for MFU, from the vendor datasheet
# dense figures (NVIDIA H100 / H200 / A100 Tensor Core GPU datasheets; the datasheets print the
# 2:4-sparse numbers, these are half of them). The float32 column is TF32 on the tensor cores:
# XLA runs float32 matmuls and convolutions on GPUs in TF32 at JAX's default matmul precision.
# First match of the pattern in `jax.devices()[0].device_kind` wins, so the PCIe and NVL
# variants (other clocks and power limits) must come before the plain names.
PEAK_FLOPS: tuple[tuple[str, dict[str, float] | None], ...] = (
    ("H100 PCIe", {"float32": 378e12, "bfloat16": 756e12}),
    ("H100 NVL", None),  # figures differ between datasheet revisions: MFU left out
    ("H200 NVL", None),
    ("H100", {"float32": 494.7e12, "bfloat16": 989.4e12}),  # SXM5, e.g. 'NVIDIA H100 80GB HBM3'
    ("H200", {"float32": 494.7e12, "bfloat16": 989.4e12}),  # SXM5
    ("A100", {"float32": 156e12, "bfloat16": 312e12}),  # SXM4 and PCIe alike
)


def progress(message: str) -> None:
    """One progress line on stderr (stdout keeps only the result)."""
    print(message, file=sys.stderr, flush=True)


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (small smoke-size FLOP counts stay > 0)."""
    return float(f"{value:.{digits}g}")


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


# Random-number code: jax rolls threefry's rounds into a while loop (integer hashing only).
RNG_OP = re.compile(r"threefry|_uniform|_bernoulli|_gumbel|random_bits")


def while_loops(compiled: Any) -> tuple[int, int]:
    """(while ops in the optimised HLO, those of random-number generation); (-1, -1) without
    HLO text."""
    try:
        text = compiled.as_text()
    except Exception:  # some backends keep no text
        return -1, -1
    loops = [line for line in (text or "").splitlines() if re.search(r"\swhile\(", line)]
    return len(loops), sum(bool(RNG_OP.search(line)) for line in loops)


def flop_note(loops: int, rng_loops: int) -> str:
    """How far XLA's FLOP count can be trusted, from the step's while loops."""
    if loops == 0:
        return "XLA's count, uncorrected: the step has no while loops"
    if loops == rng_loops:
        return (
            f"XLA's count, uncorrected: no scan/while over layers; the {loops} while loops are "
            "jax's rolled threefry rounds (integer hashing for dropout/sampling, counted once)"
        )
    return f"XLA counts a while-loop body once: {loops - rng_loops} non-RNG loops, count may be low"


def all_reduce_ops(compiled: Any) -> int:
    """All-reduce ops in the optimised HLO (after XLA combined what it combines); -1 without
    HLO text. Each is one collective call per step across the devices or processes."""
    try:
        text = compiled.as_text() or ""
    except Exception:  # some backends keep no text
        return -1
    return len(re.findall(r"\sall-reduce(?:-start)?\(", text))


def memory_gib(compiled: Any) -> tuple[float, float]:
    """(temporary buffers, arguments) of a compiled function's XLA buffer plan, GiB."""
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", float("nan"))
    arguments = getattr(memory, "argument_size_in_bytes", float("nan"))
    return temp / 2**30, arguments / 2**30


def time_steps(
    compiled: Any,
    state: Any,
    batch: Any,
    key: jax.Array,
    steps: int,
    budget_s: float | None = None,
) -> tuple[Any, dict[str, jax.Array], list[float]]:
    """Runs one warm-up step, then `steps` timed ones, on the same batch and key.

    Args:
      compiled: the compiled step (state, batch, key) -> (state, metrics).
      state, batch, key: its arguments (the state is donated and replaced every step).
      steps: most timed steps.
      budget_s: if given, stop once the timed steps took this long (at least one step runs).

    Returns:
      (state after the last step, its metrics, wall seconds of each timed step).
    """
    state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    times: list[float] = []
    while len(times) < max(steps, 1):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        if budget_s is not None and sum(times) >= budget_s:
            break
    return state, metrics, times


def replicated_key(seed: int, mesh: jax.sharding.Mesh) -> jax.Array:
    """A PRNG key replicated on `mesh`, made by a jitted function: `device_put` of a host key
    onto a mesh spanning several processes is an error (as in `training.loop`)."""
    return jax.jit(lambda: jax.random.key(seed), out_shardings=NamedSharding(mesh, P()))()


def host_scalar(value: jax.Array) -> float:
    """A replicated [] array as a Python float, also where other processes hold copies of it
    (a multi-process array is not fully addressable, so `float()` of it fails)."""
    return float(np.asarray(value.addressable_shards[0].data))


def device_description() -> str:
    """e.g. '1 x cpu (cpu)' or '8 x NVIDIA H100 80GB HBM3 (gpu)'."""
    device = jax.devices()[0]
    return f"{jax.device_count()} x {device.device_kind} ({device.platform})"


def device_peak_memory_gib() -> float | None:
    """Peak bytes in use on this process's first device since it started, GiB; None where the
    runtime keeps no statistics (the CPU client)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**30, 2)


def peak_flops(dtype: str, device_kind: str | None = None) -> float | None:
    """Dense peak FLOP/s of one device for a compute dtype, or None if the device is unknown.

    Args:
      dtype: 'float32' (TF32 tensor cores) or 'bfloat16'.
      device_kind: e.g. 'NVIDIA H100 80GB HBM3'; `jax.devices()[0].device_kind` when None.
    """
    kind = jax.devices()[0].device_kind if device_kind is None else device_kind
    peaks = next((p for name, p in PEAK_FLOPS if name in kind), None)
    return None if peaks is None else peaks.get(dtype)


def mfu_percent(flops: float, seconds: float, dtype: str) -> float | None:
    """Achieved FLOP/s per device over the device's dense peak, percent.

    Args:
      flops: FLOPs of one step over all devices.
      seconds: wall seconds of one step.
      dtype: 'float32' or 'bfloat16' (the peak column).

    Returns:
      The percentage, or None for a device without a PEAK_FLOPS figure (e.g. a CPU).
    """
    peak = peak_flops(dtype)
    if peak is None or not np.isfinite(flops):
        return None
    return round(100 * flops / seconds / jax.device_count() / peak, 1)


def mfu_fields(flops: float, seconds: float, dtype: str) -> dict[str, Any]:
    """{'mfu_percent': value or None} plus an 'mfu_note' saying why when it is None."""
    mfu = mfu_percent(flops, seconds, dtype)
    if mfu is not None:
        return {"mfu_percent": mfu}
    kind = jax.devices()[0].device_kind
    return {
        "mfu_percent": None,
        "mfu_note": f"no dense {dtype} peak known for '{kind}' (benchmarks/step_timing.PEAK_FLOPS)",
    }


def timed_fields(
    compiled: Any,
    state: Any,
    batch: Any,
    key: jax.Array,
    *,
    steps: int,
    budget_s: float | None,
    batch_size: int,
    flops: float,
    dtype: str,
) -> dict[str, Any]:
    """Times `steps` steps (`time_steps`) and returns the result fields every train-step
    benchmark reports: median s/step, the step times, images/s, memory peaks, the last loss
    and the MFU fields."""
    _, metrics, times = time_steps(compiled, state, batch, key, steps, budget_s)
    seconds = float(np.median(times))
    return {
        "seconds_per_step": round(seconds, 3),
        "step_times": [round(t, 3) for t in times],
        "images_per_second": round(batch_size / seconds, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "device_peak_memory_gib": device_peak_memory_gib(),
        "loss": host_scalar(metrics["loss"]),
        **mfu_fields(flops, seconds, dtype),
    }
