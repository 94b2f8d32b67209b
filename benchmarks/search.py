"""Speed of the search path: indexing images/s and the latency of one text query.

An SSAN bundle of the embedded README configuration (ResNet-18 at width 0.25, 128 x 64, the
BiLSTM text tower; the weights do not change the speed, so they are freshly initialised unless
`--bundle` names an exported run) is written to a temporary folder, then:
  * indexing: `build_index` over `--images` (default: the embedded Market-1501 test folder,
    786 images), images/s of the whole call (decode + resize + encode + write), cold and warm
    (a second run into a fresh folder, the encoder already compiled);
  * one text query over N = 10,000 and 100,000 clustered unit embeddings of the bundle's
    width (`_people`): tokenise + `encode_text` + stage 1, median and 90th percentile of
    `--repeats` queries after one warm-up query, and stage 1 alone; stage 1 = exact (matrix
    product + top-10) or the faiss IVF-Flat index (`inference.approximate`, default nlist,
    nprobe default and 4x), with its recall@10 against exact search over 200 queries and its
    build time.
Prints a markdown table. Usage (from the repository root, embedded data generated first):

  REID_JAX_DATA=/tmp/rjdata .venv/bin/python -m benchmarks.search
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from reid_jax.data import dataset_root
from reid_jax.export.run_export import write_task_bundle
from reid_jax.inference import load_bundle
from reid_jax.inference.index import build_index
from reid_jax.inference.search import text_embedding, top_k_rows
from reid_jax.text.vocab import Vocabulary
from reid_jax.training.tasks import ssan
from reid_jax.training.tasks.base import TrainDataInfo

BUNDLE = flags.DEFINE_string("bundle", "", "an exported SSAN bundle (default: a fresh one)")
IMAGES = flags.DEFINE_string("images", "", "folder to index (default: embedded Market test)")
REPEATS = flags.DEFINE_integer("repeats", 50, "timed queries per gallery size")
NOISE = (0.65, 1.5)  # per-image spread of the synthetic people (`_people`)
QUERY = "a woman in a yellow striped top and an orange skirt, holding a green handbag"
REPO = Path(__file__).resolve().parents[1]


def _fresh_bundle(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("ssan_cfg", REPO / "configs" / "ssan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(None)
    info = TrainDataInfo(num_examples=1, steps_per_epoch=1, num_classes=300)
    model = ssan.create_model(config, info)
    variables = ssan.init_variables(model, jax.random.key(0), config)
    words = sorted(set(QUERY.replace(",", "").split()))  # the query's words; the rest is noise
    Vocabulary(tuple(words)).save(folder / "vocab.json")
    return write_task_bundle(
        folder / "bundle", ssan, model, variables, config, info, files=[folder / "vocab.json"]
    )


def _index_rate(bundle, images: Path, out: Path) -> float:
    start = time.perf_counter()
    stats = build_index(bundle, images, out, progress=False)
    return stats.total / (time.perf_counter() - start)


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = load_bundle(BUNDLE.value or _fresh_bundle(tmp))
        images = Path(IMAGES.value) if IMAGES.value else None
        if images is None:
            import ml_collections

            data = ml_collections.ConfigDict(
                dict(
                    dataset="embedded",
                    root="",
                    embedded_seed=0,
                    embedded_image_size=(128, 64),
                    embedded_sizes=ml_collections.ConfigDict(),
                )
            )
            images = dataset_root.dataset_root(data, "Market-1501") / "bounding_box_test"
        cold = _index_rate(bundle, images, tmp / "index_cold")
        warm = _index_rate(bundle, images, tmp / "index_warm")
        count = sum(1 for _ in os.scandir(images))
        print(f"indexing {count} images ({images}): cold {cold:.1f} images/s, warm {warm:.1f}")
        dim = int(text_embedding(bundle, QUERY).shape[-1])
        rows = [
            "| gallery | noise | stage 1 | query total (median / p90) | stage 1 alone (median) "
            "| recall@10 vs exact | build |",
            "|---|---|---|---|---|---|---|",
        ]
        for size in (10_000, 100_000):
            for noise in NOISE:
                gallery, views = _people(size, dim, noise, seed=size)
                rows += _exact_and_approximate(bundle, gallery, views, noise, exact=noise == 0.65)
        print("\n".join(rows))


def _people(size: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`size` unit embeddings of size / 20 people (a random centre each plus per-image
    Gaussian noise of `noise` x the centre's scale: same-person cosine ~0.7 at 0.65, ~0.3 at
    1.5), and 200 more views of the first 200 people as recall queries. (Unstructured random
    vectors would be the worst case of any cell-based index; a real gallery is clustered by
    person, somewhere between the two noise levels.)"""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(size // 20, dim)).astype(np.float32)
    gallery = centres[np.arange(size) % len(centres)]
    gallery = gallery + noise * rng.normal(size=gallery.shape).astype(np.float32)
    views = centres[:200] + noise * rng.normal(size=(200, dim)).astype(np.float32)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return unit(gallery), unit(views)


def _timed_queries(bundle, stage_one) -> tuple[list[float], list[float]]:
    totals, stage = [], []
    for i in range(REPEATS.value + 1):
        start = time.perf_counter()
        query = text_embedding(bundle, QUERY)
        middle = time.perf_counter()
        stage_one(query)
        end = time.perf_counter()
        if i:  # the first query compiles
            totals.append(end - start)
            stage.append(end - middle)
    return totals, stage


def _row(size, dim, noise, name, totals, stage, recall, build) -> str:
    return (
        f"| {size:,} x {dim} | {noise} | {name} | {1e3 * np.median(totals):.1f} ms / "
        f"{1e3 * np.percentile(totals, 90):.1f} ms | {1e3 * np.median(stage):.2f} ms "
        f"| {recall} | {build} |"
    )


def _exact_and_approximate(bundle, gallery, views, noise, *, exact: bool) -> list[str]:
    """The faiss IVF-Flat index at its default nprobe and at 4x (and, with `exact`, the exact
    product + top-10): latency of one text query, recall@10 of the 200 views against exact."""
    from reid_jax.inference import approximate

    size, dim = gallery.shape
    truth = np.stack([top_k_rows(gallery @ v, 10) for v in views])
    out = []
    if exact:
        totals, stage = _timed_queries(bundle, lambda q: top_k_rows(gallery @ q, 10))
        out.append(_row(size, dim, "any", "exact", totals, stage, "1 (by definition)", "-"))
    start = time.perf_counter()
    index = approximate.build(gallery)
    build = f"{time.perf_counter() - start:.1f} s"
    for nprobe in (index.nprobe, 4 * index.nprobe):
        index.nprobe = nprobe
        _, found = approximate.search(index, views, 10)
        recall = f"{approximate.recall_at_k(found, truth):.3f}"
        totals, stage = _timed_queries(bundle, lambda q: approximate.search(index, q[None], 10))
        name = f"IVF-Flat nlist {index.nlist}, nprobe {nprobe}"
        out.append(_row(size, dim, noise, name, totals, stage, recall, build))
        build = "same"
    return out


if __name__ == "__main__":
    app.run(main)
