"""Images/s of the SSAN training loader (decode + flip + bicubic resize + normalise + partner).

Writes `--num_images` random ~300 x 100 JPEGs (smooth colour fields plus noise, so they
compress like photos rather than like white noise) to a temporary directory, builds SSAN
training examples over them (5 images x 2 captions per identity) and times
`make_ssan_train_loader` at each image size and worker count, after a warm-up that absorbs
worker start-up. Prints a markdown table.

Usage (from the repository root):
  /work/venv/bin/python -m benchmarks.input_pipeline --duration=15
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from reid_jax.data import pipeline, samplers, ssan_examples
from reid_jax.data.records import CaptionedImage
from reid_jax.text.vocab import Vocabulary

_NUM_IMAGES = flags.DEFINE_integer("num_images", 500, "JPEGs to generate.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_DURATION = flags.DEFINE_float("duration", 15.0, "Seconds timed per configuration.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker-process counts to time.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "Decoding threads per process.")
_SIZES = flags.DEFINE_list("sizes", ["384x128", "128x64"], "Image sizes HxW.")


def write_images(directory: str, num_images: int, seed: int = 0) -> list[str]:
    """Writes `num_images` random photo-like JPEGs of about 300 x 100 pixels.

    Args:
      directory: output folder (must exist).
      num_images: how many files.
      seed: generator seed.

    Returns:
      the file paths.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num_images):
        height, width = int(rng.integers(260, 340)), int(rng.integers(85, 115))
        coarse = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
        noise = rng.normal(0, 12, field.shape)
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        path = os.path.join(directory, f"{i:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def make_examples(paths: list[str]) -> ssan_examples.SsanTrainExamples:
    """SSAN training examples: 5 images per identity, 2 captions of 12 words per image."""
    rng = np.random.default_rng(1)
    words = tuple(f"word{i}" for i in range(300))
    records = []
    for i, path in enumerate(paths):
        tokens = tuple(tuple(rng.choice(words, 12)) for _ in range(2))
        records.append(
            CaptionedImage(
                path, i // 5, (" ".join(tokens[0]), " ".join(tokens[1])), tokens, "train"
            )
        )
    return ssan_examples.prepare_ssan_train(records, Vocabulary(words), dataset="generic")


def images_per_second(
    examples,
    *,
    image_size: tuple[int, int],
    num_workers: int,
    batch_size: int,
    duration: float,
    num_threads: int,
) -> float:
    """Times the loader for about `duration` seconds after two warm-up batches."""
    loader = pipeline.make_ssan_train_loader(
        examples,
        global_batch_size=batch_size,
        image_size=image_size,
        seed=0,
        num_workers=num_workers,
        num_threads=num_threads,
    )
    iterator = iter(loader)
    try:
        for _ in range(2):
            next(iterator)
        start, batches = time.perf_counter(), 0
        while time.perf_counter() - start < duration:
            next(iterator)
            batches += 1
        return batches * batch_size / (time.perf_counter() - start)
    finally:
        iterator.close()


def cpu_ms_per_image(examples, *, image_size: tuple[int, int], num_images: int = 512) -> float:
    """Single-thread CPU time of building one example (decode, augment, partner) + stacking.

    Unlike images/s this hardly depends on what else runs on the machine.
    """
    element_map = pipeline.SsanTrainMap(examples, image_size, seed=0)
    start = time.process_time()
    elements = [
        element_map.map(samplers.SampleIndex(i, 0, i % len(examples))) for i in range(num_images)
    ]
    np.stack([e["image"] for e in elements])
    return 1e3 * (time.process_time() - start) / num_images


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as directory:
        examples = make_examples(write_images(directory, _NUM_IMAGES.value))
        sizes = [tuple(int(v) for v in size.split("x")) for size in _SIZES.value]
        print(
            f"{len(examples)} records over {_NUM_IMAGES.value} JPEGs; batch {_BATCH.value}, "
            f"{_THREADS.value} threads/process, {os.cpu_count()} CPUs"
        )
        cpu_ms_per_image(examples, image_size=sizes[0], num_images=32)  # warm caches
        print("| image size | CPU ms/image (1 thread) |")
        print("|---|---|")
        for size in sizes:
            cost = cpu_ms_per_image(examples, image_size=size)
            print(f"| {size[0]}x{size[1]} | {cost:.2f} |", flush=True)
        # The 1-minute load average shows how much other work shared the CPUs.
        print("\n| image size | workers | images/s | load avg (1 min) after |")
        print("|---|---|---|---|")
        for size in sizes:
            for workers in _WORKERS.value:
                rate = images_per_second(
                    examples,
                    image_size=size,
                    num_workers=int(workers),
                    batch_size=_BATCH.value,
                    duration=_DURATION.value,
                    num_threads=_THREADS.value,
                )
                load = os.getloadavg()[0]
                print(f"| {size[0]}x{size[1]} | {workers} | {rate:.0f} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
