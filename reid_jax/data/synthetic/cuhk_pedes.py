"""Writes the synthetic CUHK-PEDES copy: reid_raw.json + imgs/<camera folder>/<name>.jpg."""

from __future__ import annotations

import pathlib

import numpy as np

from reid_jax.data.synthetic.attributes import sample_identity
from reid_jax.data.synthetic.captions import make_caption, tokenize
from reid_jax.data.synthetic.config import SyntheticConfig, rng_for
from reid_jax.data.synthetic.render import CameraLook, render_image
from reid_jax.data.synthetic.scene import NUM_CAMERAS, VIEWS, sample_scene
from reid_jax.data.synthetic.writers import encode_jpeg, make_dirs, write_bytes, write_json

TAG = 1  # dataset tag of every random stream of this format


def _captions(ident, scene, seed: int, pid: int, k: int) -> list[str]:
    """Two annotators' captions of one image; the second differs from the first."""
    first = make_caption(ident, scene, rng_for(seed, TAG, 2, pid, k, 0)).text
    for attempt in range(1, 10):
        second = make_caption(ident, scene, rng_for(seed, TAG, 2, pid, k, attempt)).text
        if second != first:
            break
    return [first, second]


def build_cuhk_pedes(
    root: pathlib.Path, config: SyntheticConfig, looks: tuple[CameraLook, ...]
) -> dict:
    """Renders and writes the CUHK-PEDES-format text-to-image dataset (ssan §1.1).

    Identities are 1-based and contiguous: train first, then val, then test (disjoint).
    Each identity is seen from rotating viewpoints by random cameras; every image gets two
    independent captions and their `processed_tokens`.

    Args:
      root: dataset root; writes root/CUHK-PEDES/.
      config: sizes, image size, seed.
      looks: camera_looks(config.seed).

    Returns:
      statistics: per split ids/images/captions, and `test_chance_r1`, the expected text->image
      R@1 of a random ranking (mean over test captions of same-id images / test images).
    """
    base = root / "CUHK-PEDES"
    make_dirs(base / "imgs", [f"cam_{c}" for c in range(1, NUM_CAMERAS + 1)])
    records = []
    pid = 0
    stats = {}
    for split, count in (
        ("train", config.cuhk_train_ids),
        ("val", config.cuhk_val_ids),
        ("test", config.cuhk_test_ids),
    ):
        images_of_id = []
        for _ in range(count):
            pid += 1
            ident = sample_identity(rng_for(config.seed, TAG, 0, pid))
            plan = rng_for(config.seed, TAG, 3, pid)
            low, high = config.cuhk_images_per_id
            n_images = int(plan.integers(low, high + 1))
            # Rotate through the viewpoints so each person is seen from several sides.
            views = [VIEWS[v] for v in plan.permutation(len(VIEWS))]
            for k in range(n_images):
                camera = int(plan.integers(1, NUM_CAMERAS + 1))
                rng = rng_for(config.seed, TAG, 1, pid, k)
                scene = sample_scene(rng, ident, camera, view=views[k % len(views)])
                pixels = render_image(ident, scene, config.image_size, looks, rng)
                rel = f"cam_{camera}/{pid:05d}_{k:02d}.jpg"
                write_bytes(base / "imgs" / rel, encode_jpeg(pixels, config.jpeg_quality))
                captions = _captions(ident, scene, config.seed, pid, k)
                records.append(
                    {
                        "split": split,
                        "id": pid,
                        "file_path": rel,
                        "captions": captions,
                        "processed_tokens": [tokenize(c) for c in captions],
                    }
                )
            images_of_id.append(n_images)
        n = np.asarray(images_of_id, np.float64)
        stats[split] = {"ids": count, "images": int(n.sum()), "captions": int(2 * n.sum())}
        if split == "test":
            # Each image contributes 2 queries, each with n_id relevant out of sum(n) images.
            stats["test_chance_r1"] = float(np.sum(n * n) / np.sum(n) ** 2) if n.size else 0.0
    write_json(base / "reid_raw.json", records, sort_keys=True)
    return stats
