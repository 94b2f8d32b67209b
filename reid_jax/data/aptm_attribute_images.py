"""APTM's attribute images: labelled images without captions (aptm §2.3, §6.4), for IAC/IAM/MAM
fine-tuning and prompt-score evaluation.

  dataset='pa100k'    PA-100K `annotation.mat` under `root`: train split to train, test split
                      to evaluate, 26 labels (the 'pa100k' prompt set).
  dataset='embedded', embedded_part='market'
                      the embedded Market-1501 copy: training images with their identity's
                      attributes as the 27 MALS labels ('mals' prompt set), the attribute-
                      query protocol of attribute_reid §4 on its test gallery.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

ATTRIBUTE_IMAGE_PARTS = ("market",)  # embedded parts of attribute images


def trains_on_attributes(data_config: Any) -> bool:
    """Whether the training data are attribute-labelled images without captions."""
    if data_config.dataset == "embedded":
        return data_config.embedded_part in ATTRIBUTE_IMAGE_PARTS
    return data_config.dataset == "pa100k"


@dataclasses.dataclass(frozen=True)
class AttributeImages:
    """Attribute-labelled images of one split (aptm §2).

    Attributes:
      image_paths: [N] image files.
      labels: int32 [N, K] labels in {-1, 0, 1} in the prompt set's attribute order.
      identities: [N] identity of each image (PA-100K: the image itself).
      query_dataset: for the test split of Market-format data, the attribute-query protocol
        (`data.attribute_examples.AttributeDataset`); None otherwise.
    """

    image_paths: tuple[str, ...]
    labels: np.ndarray
    identities: tuple[str, ...]
    query_dataset: Any = None


def load_attribute_images(data_config: Any, split: str) -> AttributeImages:
    """Training ('train') or evaluation ('test') attribute images of the configured source."""
    from reid_jax.text.attribute_prompts import market_to_mals_labels

    if data_config.dataset == "pa100k":
        from reid_jax.data.formats.pa100k import load_pa100k

        records = [r for r in load_pa100k(data_config.root) if r.split == split]
        return AttributeImages(
            image_paths=tuple(r.key for r in records),
            labels=np.asarray([r.labels for r in records], np.int32).reshape(len(records), -1),
            identities=tuple(r.key for r in records),
        )
    from reid_jax.data import attribute_examples

    market = data_config.copy_and_resolve_references()
    with market.unlocked():
        market.attribute_file = ""
    dataset = attribute_examples.load_attribute_dataset(market)
    if split == "train":
        identity_records = dataset.group_records[dataset.train_groups]
        return AttributeImages(
            image_paths=dataset.train_paths,
            labels=market_to_mals_labels(identity_records),
            identities=tuple(str(g) for g in dataset.train_groups),
        )
    return AttributeImages(
        image_paths=dataset.gallery_paths,
        labels=market_to_mals_labels(dataset.gallery_records),
        identities=tuple(str(i) for i in dataset.protocol.gallery_ids),
        query_dataset=dataset,
    )
