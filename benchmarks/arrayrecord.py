"""Images/s of the SSAN training loader from the image folder vs the prepared ArrayRecord copy.

Same data both ways: the train split of the embedded dataset's CUHK-PEDES part (generated
into $REID_JAX_DATA if missing), once parsed from its folder of JPEGs and once read from the
dataset `reid-jax prepare` writes (prepared into a temporary TFDS data directory). Prints
two markdown tables:

* decode only: `transforms.load_rgb` over every training image, one thread, after one
  untimed pass (so both read from the page cache);
* the loader (`pipeline.make_ssan_train_loader`, as `benchmarks.input_pipeline` times it) at
  each image size and worker count.

Usage (from the repository root):
  /work/main/.venv/bin/python -m benchmarks.arrayrecord --duration=10
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time

from absl import app, flags

from benchmarks.input_pipeline import images_per_second
from reid_jax.data import transforms
from reid_jax.data.ssan_examples import build_ssan_vocabulary_from_records, prepare_ssan_train
from reid_jax.training.tasks import ssan

# The flags of `benchmarks.input_pipeline` (defined when it is imported): --batch_size,
# --duration, --workers, --num_threads, --sizes.
FLAGS = flags.FLAGS


def _data_config(tfds_dir: str):
    spec = importlib.util.spec_from_file_location("ssan_config", "configs/ssan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("embedded")
    config.data.tfds_dir = tfds_dir
    return config


def decode_images_per_second(paths: list[str]) -> float:
    """`load_rgb` over `paths` once untimed, then once timed; images per second."""
    for path in paths:
        transforms.load_rgb(path)
    start = time.perf_counter()
    for path in paths:
        transforms.load_rgb(path)
    return len(paths) / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tfds_dir:
        sources = {}
        for source, directory in (("folder", ""), ("ArrayRecord", tfds_dir)):
            config = _data_config(directory)
            records = ssan.load_split(config.data, "train")
            sources[source] = (config, records)
        config, folder_records = sources["folder"]
        vocab = build_ssan_vocabulary_from_records(folder_records, min_count=2)
        print(
            f"{len(folder_records)} training images of the embedded CUHK-PEDES part; batch "
            f"{FLAGS.batch_size}, {FLAGS.num_threads} threads/process, {os.cpu_count()} CPUs"
        )
        print("\n| source | decode images/s (1 thread) | load avg (1 min) after |")
        print("|---|---|---|")
        for source, (_, records) in sources.items():
            rate = decode_images_per_second([r.image_path for r in records])
            print(f"| {source} | {rate:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)

        print("\n| image size | workers | source | images/s | load avg (1 min) after |")
        print("|---|---|---|---|---|")
        sizes = [tuple(int(v) for v in size.split("x")) for size in FLAGS.sizes]
        for size in sizes:
            for workers in FLAGS.workers:
                for source, (source_config, records) in sources.items():
                    examples = prepare_ssan_train(
                        records,
                        vocab,
                        dataset="embedded",
                        max_length=source_config.data.max_length,
                        table_size=source_config.model.vocab_size,
                    )
                    rate = images_per_second(
                        examples,
                        image_size=size,
                        num_workers=int(workers),
                        batch_size=FLAGS.batch_size,
                        duration=FLAGS.duration,
                        num_threads=FLAGS.num_threads,
                    )
                    load = os.getloadavg()[0]
                    print(
                        f"| {size[0]}x{size[1]} | {workers} | {source} | {rate:.0f} | {load:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    app.run(main)
