"""TFDS builder for Market-1501 (image-to-image re-id), manual download, ArrayRecord output.

The manual dir is the extracted `Market-1501-v15.09.15` folder (`bounding_box_train/`,
`query/`, `bounding_box_test/`) or its parent; parsing is `reid_jax.data.formats.market1501`.
Splits 'train', 'query' and 'gallery' (= `bounding_box_test`). Usage as in
`reid_jax.data.builders.cuhk_pedes`, with name 'market1501'; the no-TensorFlow mechanics are
in `reid_jax.data.builders.manual_builder`.

One example per image:

| feature | type | meaning |
|---|---|---|
| `image` | Image, uint8 [H, W, 3] | 128 x 64 for Market-1501 |
| `image_path` | Text | relative to the manual dir, e.g. `query/0001_c1s1_001051_00.jpg` |
| `person_id` | int64 | from the file name; 0 = distractor, -1 = junk (kept as parsed) |
| `camera_id` | int64 | 0-based camera (`c1` -> 0) |
| `index` | int64 | position in the parser's order (each split is stored in this order) |
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from reid_jax.data.builders.image_encoding import rgb_image_bytes
from reid_jax.data.builders.manual_builder import ManualRecordsBuilder
from reid_jax.data.formats.market1501 import load_market1501
from reid_jax.data.records import CameraImage


class Market1501(ManualRecordsBuilder):
    """Market-1501: 32,668 images of 1,501 persons from 6 cameras (+ distractors)."""

    name = "market1501"
    SPLITS = ("train", "query", "gallery")
    DESCRIPTION = "Market-1501 person re-identification dataset (one example per image)."
    HOMEPAGE = "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download Market-1501-v15.09.15 and point manual_dir at the extracted folder holding "
        "`bounding_box_train/`, `query/` and `bounding_box_test/`."
    )

    def features(self) -> tfds.features.FeaturesDict:
        """Feature spec (table in the module docstring)."""
        return tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image_path": tfds.features.Text(),
                "person_id": np.int64,
                "camera_id": np.int64,
                "index": np.int64,
            }
        )

    def load_records(self, root: str) -> list[CameraImage]:
        """Scans the split folders (see `reid_jax.data.formats.market1501`)."""
        return load_market1501(root)

    def record_example(self, record: CameraImage, index: int, root: str) -> dict:
        """One example per image; `index` is the parser-order position."""
        return {
            "image": rgb_image_bytes(record.image_path, source=root, record=index),
            "image_path": os.path.relpath(record.image_path, root),
            "person_id": record.person_id,
            "camera_id": record.camera_id,
            "index": index,
        }
