"""Market-1501 TFDS builder: tiny split folders in the real naming scheme -> ArrayRecord."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from reid_jax.data.builders import registry

# (folder, file name, person_id, camera_id) in the real naming scheme; -1 junk, 0000 distractor.
_FILES = [
    ("bounding_box_train", "0002_c1s1_000451_03.jpg", 2, 0),
    ("bounding_box_train", "0002_c2s1_000301_01.jpg", 2, 1),
    ("bounding_box_train", "0007_c6s3_085667_02.jpg", 7, 5),
    ("query", "0001_c1s1_001051_00.jpg", 1, 0),
    ("bounding_box_test", "-1_c3s2_012345_01.jpg", -1, 2),
    ("bounding_box_test", "0000_c5s1_000001_07.jpg", 0, 4),
    ("bounding_box_test", "0001_c2s1_000776_01.jpg", 1, 1),
]
_SPLIT_OF = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
_RELEASE = "Market-1501-v15.09.15"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    parent = tmp_path_factory.mktemp("market_manual")
    rng = np.random.default_rng(1)
    expected = {}
    for folder, name, pid, cam in _FILES:
        path = parent / _RELEASE / folder / name
        os.makedirs(path.parent, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(path)
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        expected[f"{_RELEASE}/{folder}/{name}"] = (_SPLIT_OF[folder], pid, cam, pixels)
    (parent / _RELEASE / "bounding_box_test" / "Thumbs.db").write_bytes(b"junk")
    data_dir = tmp_path_factory.mktemp("market_data")
    # The manual dir is the parent of the release folder: the parser resolves it.
    builder = registry.prepare_dataset("market1501", manual_dir=parent, data_dir=data_dir)
    return builder, data_dir, expected


def test_split_counts(prepared):
    builder, _, expected = prepared
    counts = {}
    for split, *_ in expected.values():
        counts[split] = counts.get(split, 0) + 1
    assert {s: info.num_examples for s, info in builder.info.splits.items()} == counts


def test_examples_round_trip(prepared):
    _, data_dir, expected = prepared
    seen, indices = set(), set()
    for split in ("train", "query", "gallery"):
        source = registry.load_data_source("market1501", data_dir=data_dir, split=split)
        for i in range(len(source)):
            example = source[i]
            path = example["image_path"].decode()
            want_split, pid, cam, pixels = expected[path]
            assert want_split == split
            assert (int(example["person_id"]), int(example["camera_id"])) == (pid, cam)
            np.testing.assert_array_equal(example["image"], pixels)
            seen.add(path)
            indices.add(int(example["index"]))
    assert seen == set(expected)
    assert indices == set(range(len(expected)))
