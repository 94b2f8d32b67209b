"""Shared TFDS builder for the per-image caption datasets (CUHK-PEDES, ICFG-PEDES, RSTPReid).

Each concrete builder only names its parser and splits; storage and the no-TensorFlow
mechanics are described in `reid_jax.data.builders.manual_builder`.

One example per image (one `CaptionedImage`):

| feature | type | meaning |
|---|---|---|
| `image` | Image, uint8 [H, W, 3] | decoded by PIL (`SkipDecoding()` gives the bytes) |
| `image_path` | Text | path relative to the manual dir, e.g. `imgs/CUHK01/0363004.png` |
| `person_id` | int64 | identity exactly as in the file (CUHK 1-based, ICFG 0-based) |
| `captions` | Sequence(Text) | raw sentences, >= 1 |
| `tokens` | Sequence(Text) | per caption, `processed_tokens` joined by spaces; [] if none |
| `index` | int64 | position of the record in the parser's (file) order |

Text comes back as UTF-8 `bytes`. Each split holds its examples in file order (`index`
ascending; the SSAN vocabulary depends on first-occurrence order, ssan §1.3). `tokens` is
empty for files without `processed_tokens` (RSTPReid).
"""

from __future__ import annotations

import abc
import os

import numpy as np
import tensorflow_datasets as tfds

from reid_jax.data.builders.image_encoding import rgb_image_bytes
from reid_jax.data.builders.manual_builder import ManualRecordsBuilder
from reid_jax.data.records import CaptionedImage


def captioned_image_features() -> tfds.features.FeaturesDict:
    """Feature spec of one `CaptionedImage` example (table in the module docstring)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_path": tfds.features.Text(),
            "person_id": np.int64,
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "tokens": tfds.features.Sequence(tfds.features.Text()),
            "index": np.int64,
        }
    )


def captioned_image_example(record: CaptionedImage, index: int, *, root: str) -> dict:
    """Turns one parsed record into a TFDS example dict.

    Args:
      record: the parsed image and its captions.
      index: position of the record in file order.
      root: the manual dir the record's absolute `image_path` lies under.

    Returns:
      dict with the features of `captioned_image_features`.
    """
    tokens = [" ".join(caption_tokens) for caption_tokens in record.tokens or ()]
    return {
        "image": rgb_image_bytes(record.image_path, source=root, record=index),
        "image_path": os.path.relpath(record.image_path, root),
        "person_id": record.person_id,
        "captions": list(record.captions),
        "tokens": tokens,
        "index": index,
    }


class CaptionedImageBuilder(ManualRecordsBuilder, abc.ABC):
    """Base builder for caption datasets: subclasses implement `load_records` only."""

    def features(self) -> tfds.features.FeaturesDict:
        """See `captioned_image_features`."""
        return captioned_image_features()

    def record_example(self, record: CaptionedImage, index: int, root: str) -> dict:
        """See `captioned_image_example`."""
        return captioned_image_example(record, index, root=root)
