"""TFDS builder for MALS (APTM pre-training, 1.5 M image-caption pairs), ArrayRecord output.

The manual dir is the MALS root: `gene_attrs/` holds the annotation files
`g_<subset>_attrs.json` (all 91, or a subset: the present ones are read in the reference order
of aptm §1.1 and the count is logged), and the `image` paths inside them (e.g.
`gene_crop/c_g_a_0/0.jpg`) are relative to the root. Parsing: `reid_jax.data.formats.mals`.
Usage as in `reid_jax.data.builders.cuhk_pedes`, with name 'mals'.

One example per distinct image, so an image named by several pairs is stored once (MALS has
one caption per image, so in practice one example per pair). Single split 'train'; the
examples follow the first appearance of their image in the concatenated files.

| feature | type | meaning |
|---|---|---|
| `image` | Image, uint8 [H, W, 3] | decoded by PIL (`SkipDecoding()` gives the bytes) |
| `image_path` | Text | relative to the manual dir, e.g. `gene_crop/c_g_a_0/0.jpg` |
| `captions` | Sequence(Text) | the caption of each pair of this image, in file order |
| `image_ids` | Sequence(Text) | each pair's `image_id` (unique per pair in MALS) |
| `labels` | Sequence(int64 [27]) | each pair's attribute labels in {1, 0, -1} (aptm §2.2) |
| `pair_indices` | Sequence(int64) | each pair's position in the concatenated files |
| `index` | int64 | first-appearance rank of the image (= its position in the split) |
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from reid_jax.data.builders.image_encoding import rgb_image_bytes
from reid_jax.data.builders.manual_builder import ManualRecordsBuilder
from reid_jax.data.formats.mals import (
    ANNOTATION_FOLDER,
    MALS_SUBSETS,
    NUM_ATTRIBUTES,
    load_mals,
    mals_annotation_files,
)
from reid_jax.data.records import CaptionPair


def pairs_by_image(pairs: Sequence[CaptionPair]) -> dict[str, list[int]]:
    """image path -> positions of its pairs, images in first-appearance order.

    Args:
      pairs: all pairs in file order.

    Returns:
      an insertion-ordered dict; its i-th key is the image stored at position i.
    """
    groups: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        groups.setdefault(pair.image_path, []).append(index)
    return groups


class Mals(ManualRecordsBuilder):
    """MALS: 1,510,330 generated pedestrian images, one BLIP caption and 27 labels each."""

    name = "mals"
    SPLITS = ("train",)
    DESCRIPTION = "MALS text-based person pre-training dataset (one example per image)."
    HOMEPAGE = "https://github.com/Shuyu-XJTU/APTM"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download MALS and point manual_dir at the folder holding `gene_attrs/` (the "
        "g_<subset>_attrs.json files) and the image folders their `image` paths start in."
    )

    def features(self) -> tfds.features.FeaturesDict:
        """Feature spec (table in the module docstring)."""
        return tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image_path": tfds.features.Text(),
                "captions": tfds.features.Sequence(tfds.features.Text()),
                "image_ids": tfds.features.Sequence(tfds.features.Text()),
                "labels": tfds.features.Sequence(
                    tfds.features.Tensor(shape=(NUM_ATTRIBUTES,), dtype=np.int64)
                ),
                "pair_indices": tfds.features.Sequence(np.int64),
                "index": np.int64,
            }
        )

    def load_records(self, root: str) -> list[CaptionPair]:
        """Parses the present annotation files of `root/gene_attrs` in the reference order.

        Images are not checked here: the build decodes each one and names a bad file.
        """
        files = mals_annotation_files(os.path.join(root, ANNOTATION_FOLDER), allow_missing=True)
        if len(files) < len(MALS_SUBSETS):
            logging.warning(
                "%s: %d of the %d MALS annotation files found; building from those",
                root,
                len(files),
                len(MALS_SUBSETS),
            )
        return load_mals(files, root, check_images=False)

    def record_example(self, record: CaptionPair, index: int, root: str) -> dict:
        """The example of an image with a single pair (see `image_example`)."""
        return self.image_example([record], [index], index, root)

    def image_example(
        self, pairs: Sequence[CaptionPair], pair_indices: Sequence[int], index: int, root: str
    ) -> dict:
        """One example: an image and every pair that names it (features in the module table)."""
        first = pairs[0]
        labels = [p.label if p.label is not None else (-1,) * NUM_ATTRIBUTES for p in pairs]
        return {
            "image": rgb_image_bytes(first.image_path, source=root, record=first.image_id),
            "image_path": os.path.relpath(first.image_path, root),
            "captions": [p.caption for p in pairs],
            "image_ids": [p.image_id for p in pairs],
            "labels": np.asarray(labels, np.int64).reshape(len(pairs), NUM_ATTRIBUTES),
            "pair_indices": list(pair_indices),
            "index": index,
        }

    def split_examples(self, records: Sequence[CaptionPair], root: str) -> dict[str, Iterator]:
        """{'train': one example per distinct image, keyed by first-appearance rank}."""
        return {"train": self._image_examples(records, root)}

    def _image_examples(
        self, records: Sequence[CaptionPair], root: str
    ) -> Iterator[tuple[int, dict]]:
        for rank, indices in enumerate(pairs_by_image(records).values()):
            yield rank, self.image_example([records[i] for i in indices], indices, rank, root)

    def image_positions(self, records: Sequence[CaptionPair]) -> list[tuple[str, int]]:
        """('train', first-appearance rank of the pair's image) per pair."""
        ranks: dict[str, int] = {}
        return [("train", ranks.setdefault(r.image_path, len(ranks))) for r in records]
