"""Speed of the retrieval metrics against a per-query NumPy loop.

Text protocol at CUHK-PEDES test size (6,156 caption queries x 3,074 images, 1,000 ids with
~3 images each, 2 captions per image) with both AP modes; Market-1501 protocol at full size
(3,368 x 15,913 with distractors, junk and cameras). Scores are random with a bonus for the
true identity so that the ranks look like a trained model's. The per-query loop is the
reference re-derivation used by the tests (tests/evaluation/eval_reference_impls.py): one
stable argsort per query. Each time is the minimum of `--repeats` runs; results are checked
equal. Prints a markdown table.

Usage (from the repository root):
  /work/venv/bin/python -m benchmarks.retrieval_metrics
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

from reid_jax.evaluation import retrieval

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
from evaluation import eval_reference_impls as ref  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per measurement (the minimum is reported).")
_LOOP_REPEATS = flags.DEFINE_integer("loop_repeats", 3, "Runs of the slow per-query loops.")


def best_time(fn, repeats: int):
    """(minimum wall time over `repeats` calls, last result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def text_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    gallery_ids = np.sort(rng.integers(0, 1000, 3074))
    query_ids = np.repeat(gallery_ids, 2)
    query_ids = np.concatenate([query_ids, query_ids[:8]])[:6156]
    sim = rng.standard_normal((6156, 3074)).astype(np.float32)
    sim += 3.0 * (query_ids[:, None] == gallery_ids[None, :])
    return sim, query_ids, gallery_ids


def market_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    gallery_ids = np.concatenate([rng.integers(1, 751, 13115), np.zeros(2798, np.int64)])
    gallery_cams = rng.integers(0, 6, gallery_ids.size)
    query_ids = rng.integers(1, 751, 3368)
    query_cams = rng.integers(0, 6, 3368)
    dist = rng.random((3368, gallery_ids.size)).astype(np.float32)
    dist -= 0.4 * (query_ids[:, None] == gallery_ids[None, :])
    return dist, query_ids, gallery_ids, query_cams, gallery_cams


def main(argv):
    del argv
    rows = []
    sim, qids, gids = text_case()
    for mode in ("step", "trapezoid"):
        fast, got = best_time(
            lambda m=mode: retrieval.retrieval_metrics(sim, qids, gids, ap_mode=m), _REPEATS.value
        )
        slow, want = best_time(
            lambda m=mode: ref.per_query_text_metrics(sim, qids, gids, (1, 5, 10), m),
            _LOOP_REPEATS.value,
        )
        assert all(abs(got[k] - want[k]) < 1e-9 for k in want), (got, want)
        rows.append((f"text, {mode} AP (R@1/5/10, mAP, mINP)", "6,156 x 3,074", fast, slow))
    market = market_case()
    for mode in ("step", "trapezoid"):
        fast, got = best_time(
            lambda m=mode: retrieval.image_reid_metrics(*market, ap_mode=m), _REPEATS.value
        )
        slow, want = best_time(
            lambda m=mode: ref.per_query_market_metrics(*market, (1, 5, 10), m),
            _LOOP_REPEATS.value,
        )
        assert all(abs(got[k] - want[k]) < 1e-9 for k in want), (got, want)
        rows.append((f"Market-1501, {mode} AP (R@1/5/10, mAP)", "3,368 x 15,913", fast, slow))
    print("| metrics | Q x G | vectorised (s) | per-query loop (s) | speed-up |")
    print("|---|---|---|---|---|")
    for name, size, fast, slow in rows:
        print(f"| {name} | {size} | {fast:.3f} | {slow:.2f} | {slow / fast:.0f}x |")
    print(f"\nload average: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    app.run(main)
