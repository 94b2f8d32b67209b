"""Speed of `k_reciprocal_rerank` against the straightforward per-row NumPy form.

Random clustered features (identities with ~20 images each, so the k-reciprocal sets look
like a trained model's), euclidean distances in float32, k1 = 20, k2 = 6, lambda = 0.3:
  * 500 queries x 2,500 gallery;
  * Market-1501 size: 3,368 x 15,913 (all-to-all 19,281^2).
The per-row form (tests/evaluation/eval_reference_impls.py: dense N x N matrices, full argsort,
loops over rows) runs `--reference_repeats` times at 500 x 2,500 and once at Market size
(about 2 minutes and ~7 GB; `--reference_market=false` skips it); the vectorised version
reports the minimum of `--repeats` warm runs and the first (cold: JAX compile) run. Results
are checked equal (max abs diff). Also times one dense pass over g_g with XLA and with NumPy
(why the dense passes are NumPy). Prints markdown tables.

Usage (from the repository root):
  /work/venv/bin/python -m benchmarks.reranking
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

from reid_jax.evaluation.reranking import k_reciprocal_rerank

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
from evaluation import eval_reference_impls as ref  # noqa: E402


def distances(num_q: int, num_g: int, dim: int, seed: int = 0):
    """(q_g, q_q, g_g) float32 euclidean distances of clustered random features."""
    rng = np.random.default_rng(seed)
    num_ids = max(1, (num_q + num_g) // 25)
    labels = rng.integers(0, num_ids, num_q + num_g)
    feats = rng.standard_normal((num_ids, dim))[labels] + 0.7 * rng.standard_normal(
        (num_q + num_g, dim)
    )
    feats = feats.astype(np.float32)
    q, g = feats[:num_q], feats[num_q:]

    def euclid(a, b):
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
        return np.sqrt(np.maximum(sq, 0)).astype(np.float32)

    return euclid(q, g), euclid(q, q), euclid(g, g)


def xla_vs_numpy(g_g: np.ndarray, block: int = 32) -> list[tuple[str, float]]:
    """Why the dense passes are NumPy: block min + max of g_g's columns, both ways (min of 3)."""
    import jax
    import jax.numpy as jnp

    cut = g_g.shape[0] // block * block

    @jax.jit
    def xla_stats(x):
        view = x[:cut].reshape(-1, block, x.shape[1])
        return jnp.min(view, axis=1), jnp.max(view, axis=1)

    def numpy_stats():
        view = g_g[:cut].reshape(-1, block, g_g.shape[1])
        return view.min(axis=1), view.max(axis=1)

    def best(fn):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return min(times)

    on_device = jax.device_put(g_g)
    jax.block_until_ready(xla_stats(on_device))
    return [
        ("jax.device_put (host -> CPU device copy)", best(lambda: jax.device_put(g_g))),
        ("XLA jit: block min + max", best(lambda: xla_stats(on_device))),
        ("NumPy views: block min + max", best(numpy_stats)),
    ]


def time_vectorised(
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray], repeats: int, budget_s: float | None = None
) -> tuple[np.ndarray, float, list[float]]:
    """Times `k_reciprocal_rerank` (k1 = 20, k2 = 6, lambda = 0.3) on (q_g, q_q, g_g).

    Args:
      inputs: from `distances`.
      repeats: most warm runs after the first (cold, JAX-compiling) one.
      budget_s: stop once the warm runs took this long (at least one runs).

    Returns:
      (re-ranked [Q, G] distances, first-call seconds, seconds of each warm run).
    """
    start = time.perf_counter()
    out = k_reciprocal_rerank(*inputs)
    cold = time.perf_counter() - start
    warm: list[float] = []
    while len(warm) < max(repeats, 1):
        start = time.perf_counter()
        k_reciprocal_rerank(*inputs)
        warm.append(time.perf_counter() - start)
        if budget_s is not None and sum(warm) >= budget_s:
            break
    return out, cold, warm


def measure(
    num_q: int, num_g: int, *, dim: int = 128, repeats: int = 3, budget_s: float | None = None
) -> dict:
    """Re-ranking time at Q x G on clustered random features, as a result dict."""
    inputs = distances(num_q, num_g, dim)
    out, cold, warm = time_vectorised(inputs, repeats, budget_s)
    return {
        "queries": num_q,
        "gallery": num_g,
        "dim": dim,
        "first_call_seconds": round(cold, 3),
        "warm_seconds": round(min(warm), 3),
        "warm_times": [round(t, 3) for t in warm],
        "finite": bool(np.isfinite(out).all()),
    }


def define_flags() -> None:
    """The command-line flags (defined only when run as a script, so that `gpu_suite`
    can import every benchmark module)."""
    flags.DEFINE_integer("repeats", 10, "Warm runs of the vectorised version.")
    flags.DEFINE_integer("dim", 128, "Feature dimension.")
    flags.DEFINE_bool("reference_market", True, "Run the per-row form (once) at Market size.")
    flags.DEFINE_integer("reference_repeats", 3, "Per-row runs at 500 x 2,500.")


def main(argv):
    del argv
    args = flags.FLAGS
    rows, xla_rows = [], []
    for num_q, num_g in ((500, 2500), (3368, 15913)):
        inputs = distances(num_q, num_g, args.dim)
        fast_out, cold, warm = time_vectorised(inputs, args.repeats)
        slow, diff = None, None
        if num_q < 1000 or args.reference_market:
            runs = []
            for _ in range(args.reference_repeats if num_q < 1000 else 1):
                start = time.perf_counter()
                slow_out = ref.rerank_per_row(*inputs)
                runs.append(time.perf_counter() - start)
            slow = min(runs)
            diff = float(np.abs(fast_out - slow_out).max())
            del slow_out
        if num_q > 1000:
            xla_rows = xla_vs_numpy(inputs[2])
        rows.append((num_q, num_g, min(warm), cold, slow, diff))
        print(
            f"done {num_q} x {num_g}: warm {min(warm):.2f} s, cold {cold:.2f} s, "
            f"per-row {slow} s, max diff {diff}",
            flush=True,
        )
    print(
        "\n| Q x G (N = Q + G) | vectorised, warm min (s) | first call (s) | per-row NumPy (s) "
        "| speed-up (warm) | max abs diff |"
    )
    print("|---|---|---|---|---|---|")
    for num_q, num_g, warm, cold, slow, diff in rows:
        size = f"{num_q:,} x {num_g:,} ({num_q + num_g:,})"
        slow_s = "not run" if slow is None else f"{slow:.1f}"
        ratio = "-" if slow is None else f"{slow / warm:.0f}x"
        diff_s = "-" if diff is None else f"{diff:.1e}"
        print(f"| {size} | {warm:.2f} | {cold:.2f} | {slow_s} | {ratio} | {diff_s} |")
    print("\n| one pass over g_g (15,913^2 float32, 1 GB) | time (s) |\n|---|---|")
    for name, seconds in xla_rows:
        print(f"| {name} | {seconds:.2f} |")
    print(f"\nload average: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    define_flags()
    app.run(main)
