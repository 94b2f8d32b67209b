"""Writes the synthetic Market-1501 copy: three image folders and market_attribute.mat."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from reid_jax.data.synthetic.attributes import market_codes, sample_identity
from reid_jax.data.synthetic.config import SyntheticConfig, rng_for
from reid_jax.data.synthetic.render import CameraLook, render_image
from reid_jax.data.synthetic.scene import NUM_CAMERAS, VIEWS, sample_scene
from reid_jax.data.synthetic.writers import (
    encode_jpeg,
    make_dirs,
    market_file_name,
    write_bytes,
    write_market_attributes,
)

TAG = 2  # dataset tag of every random stream of this format
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


class _Writer:
    """Renders and writes images into the Market folders, counting them."""

    def __init__(self, base: pathlib.Path, config: SyntheticConfig, looks):
        self.base, self.config, self.looks = base, config, looks
        self.counts = {f: 0 for f in FOLDERS}

    def write(self, folder: str, name: str, ident, scene, rng) -> None:
        pixels = render_image(ident, scene, self.config.image_size, self.looks, rng)
        write_bytes(self.base / folder / name, encode_jpeg(pixels, self.config.jpeg_quality))
        self.counts[folder] += 1


def _person(
    writer: _Writer, pid: int, images: tuple[int, int], folder: str, with_queries: bool
) -> dict[str, int]:
    """Writes one identity as tracklets over >= 2 cameras; optional queries (<= 1 per camera).

    Frames of one camera form a tracklet: same viewpoint and sequence, consecutive frames, so
    same-camera images are near duplicates (why the protocol junks them, alignedreid §7.3).
    """
    seed = writer.config.seed
    ident = sample_identity(rng_for(seed, TAG, 0, pid))
    plan = rng_for(seed, TAG, 3, pid)
    n_images = int(plan.integers(images[0], images[1] + 1))
    n_cams = int(plan.integers(2, min(NUM_CAMERAS, n_images) + 1))
    cams = np.sort(plan.choice(NUM_CAMERAS, n_cams, replace=False) + 1)
    per_cam = plan.multinomial(n_images - n_cams, np.full(n_cams, 1.0 / n_cams)) + 1
    query_cams = set()
    if with_queries:
        query_cams = {int(c) for c in cams if plan.random() < 0.6}
        query_cams = query_cams or {int(cams[plan.integers(n_cams)])}
    for cam, count in zip(cams.tolist(), per_cam.tolist(), strict=True):
        view = VIEWS[int(plan.choice(len(VIEWS), p=(0.4, 0.35, 0.25)))]
        mirror = bool(plan.random() < 0.5)
        seq, start = int(plan.integers(1, 7)), int(plan.integers(0, 900_000))
        step = int(plan.integers(4, 30))
        box = 1 if plan.random() < 0.8 else int(plan.integers(2, 4))
        total = count + (cam in query_cams)
        for i in range(total):
            rng = rng_for(seed, TAG, 1, pid, cam, i)
            scene = sample_scene(rng, ident, cam, view=view, mirror=mirror)
            dest = "query" if i == count else folder
            writer.write(
                dest, market_file_name(pid, cam, seq, start + i * step, box), ident, scene, rng
            )
    return market_codes(ident)


def _unique_name(rng: np.random.Generator, pid: int, used: set[str]) -> tuple[str, int]:
    while True:
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        name = market_file_name(
            pid,
            cam,
            int(rng.integers(1, 7)),
            int(rng.integers(0, 999_999)),
            int(rng.integers(1, 6)),
        )
        if name not in used:
            used.add(name)
            return name, cam


def _clutter(writer: _Writer, count: int, pid: int, kind: int) -> None:
    """Distractors (pid 0: bad detections, cut-off people) or junk (pid -1: mostly background)."""
    used: set[str] = set()
    for j in range(count):
        rng = rng_for(writer.config.seed, TAG, kind, j)
        name, cam = _unique_name(rng, pid, used)
        ident = sample_identity(rng)
        scene = sample_scene(rng, ident, cam)
        scene = dataclasses.replace(
            scene,
            scale=scene.scale * float(rng.uniform(1.2, 2.2)),
            top_y=float(rng.uniform(-1.0, 0.4)),
            center_x=float(rng.uniform(0.0, 1.0)),
            blur=scene.blur if pid == 0 else float(rng.uniform(0.5, 1.5)),
        )
        background_only = pid == -1 and rng.random() < 0.6
        writer.write("bounding_box_test", name, None if background_only else ident, scene, rng)


def build_market1501(
    root: pathlib.Path, config: SyntheticConfig, looks: tuple[CameraLook, ...]
) -> dict:
    """Renders and writes the Market-1501-format image-to-image dataset (alignedreid §1.3-1.4).

    Train and test identities are disjoint and interleaved over 1..N (as in the real set).
    bounding_box_test also gets distractors `0000_...` and junk `-1_...`; market_attribute.mat
    holds the identity-level attributes of both splits.

    Args:
      root: dataset root; writes root/Market-1501/.
      config: sizes, image size, seed.
      looks: camera_looks(config.seed).

    Returns:
      statistics: images per folder and identities per split.
    """
    base = root / "Market-1501"
    make_dirs(base, list(FOLDERS))
    writer = _Writer(base, config, looks)
    n_ids = config.market_train_ids + config.market_test_ids
    order = rng_for(config.seed, TAG, 9).permutation(n_ids) + 1
    train_ids = sorted(int(i) for i in order[: config.market_train_ids])
    test_ids = sorted(int(i) for i in order[config.market_train_ids :])
    train = {
        pid: _person(writer, pid, config.market_train_images_per_id, "bounding_box_train", False)
        for pid in train_ids
    }
    test = {
        pid: _person(writer, pid, config.market_gallery_images_per_id, "bounding_box_test", True)
        for pid in test_ids
    }
    _clutter(writer, config.market_distractors, 0, 4)
    _clutter(writer, config.market_junk, -1, 5)
    write_market_attributes(base / "market_attribute.mat", train, test)
    return {"images": dict(writer.counts), "train_ids": len(train_ids), "test_ids": len(test_ids)}
