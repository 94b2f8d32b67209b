"""Speed of the search path: indexing images/s and the latency of one text query.

An SSAN bundle of the embedded README configuration (ResNet-18 at width 0.25, 128 x 64, the
BiLSTM text tower; the weights do not change the speed, so they are freshly initialised unless
`--bundle` names an exported run) is written to a temporary folder, then:
  * indexing: `build_index` over `--images` (default: the embedded Market-1501 test folder,
    786 images), images/s of the whole call (decode + resize + encode + write), cold and warm
    (a second run into a fresh folder, the encoder already compiled);
  * one text query over N = 10,000 and 100,000 random unit embeddings of the bundle's width:
    tokenise + `encode_text` + the matrix product + top-10, median and 90th percentile of
    `--repeats` queries after one warm-up query, and the matrix product + top-10 alone.
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
        rng = np.random.default_rng(0)
        rows = [
            "| gallery | query total (median / p90) | product + top-10 (median) |",
            "|---|---|---|",
        ]
        for size in (10_000, 100_000):
            gallery = rng.normal(size=(size, dim)).astype(np.float32)
            gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
            totals, products = [], []
            for i in range(REPEATS.value + 1):
                start = time.perf_counter()
                query = text_embedding(bundle, QUERY)
                middle = time.perf_counter()
                top_k_rows(gallery @ query, 10)
                end = time.perf_counter()
                if i:  # the first query compiles
                    totals.append(end - start)
                    products.append(end - middle)
            rows.append(
                f"| {size:,} x {dim} | {1e3 * np.median(totals):.1f} ms / "
                f"{1e3 * np.percentile(totals, 90):.1f} ms | {1e3 * np.median(products):.1f} ms |"
            )
        print("\n".join(rows))


if __name__ == "__main__":
    app.run(main)
