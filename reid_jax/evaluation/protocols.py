"""Query / gallery arrays of the evaluation protocols, built from parsed dataset records.

* `text_protocol`: text->image person search (ssan §5.1, aptm §1.2): the gallery is every
  image in file order, the queries are all captions flattened in file order, a caption's id is
  its image's person id, and every gallery image of that person is relevant.
* `camera_protocol`: Market-1501 / Duke / CUHK03 image re-id (alignedreid §7.3): junk (-1)
  images are dropped from the gallery, distractors (0) kept; the per-query same-id-same-camera
  junk rule is applied by `retrieval.image_reid_metrics`.
* `attribute_protocol`: attribute->image retrieval (attribute_reid §4): one query per distinct
  attribute vector, relevant = exact match of the whole vector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.records import CameraImage, CaptionedImage


@dataclasses.dataclass(frozen=True)
class RetrievalProtocol:
    """Everything the metrics and the rank-list pictures need about queries and gallery.

    Attributes:
      query_ids: [Q] int64 identity of each query.
      gallery_ids: [G] int64 identity of each gallery item.
      query_cams: [Q] int64 camera ids (camera protocol) or None.
      gallery_cams: [G] int64 camera ids (camera protocol) or None.
      query_texts: Q caption strings (text protocol) or None.
      query_paths: Q image paths (camera protocol) or None.
      gallery_paths: G image paths, or None.
      query_source: [Q] int64 index of the record each query came from (text protocol: the
        caption's own image in the gallery).
      gallery_source: [G] int64 index of the input gallery record of each gallery item.
    """

    query_ids: np.ndarray
    gallery_ids: np.ndarray
    query_cams: np.ndarray | None = None
    gallery_cams: np.ndarray | None = None
    query_texts: tuple[str, ...] | None = None
    query_paths: tuple[str, ...] | None = None
    gallery_paths: tuple[str, ...] | None = None
    query_source: np.ndarray | None = None
    gallery_source: np.ndarray | None = None


def text_protocol(
    images: Sequence[CaptionedImage], *, first_caption_only: bool = False
) -> RetrievalProtocol:
    """Caption queries against an image gallery (CUHK-PEDES, ICFG-PEDES, RSTPReid test splits).

    Args:
      images: test-split records in file order.
      first_caption_only: use only each image's first caption (APTM's ICFG-PEDES test).

    Returns:
      RetrievalProtocol with query_texts, gallery_paths and query_source (own image index).
    """
    texts, ids, source = [], [], []
    for i, image in enumerate(images):
        if not image.captions:
            raise DatasetFormatError(
                image.image_path, "image has no caption", record=i, field="captions"
            )
        for caption in image.captions[:1] if first_caption_only else image.captions:
            texts.append(caption)
            ids.append(image.person_id)
            source.append(i)
    return RetrievalProtocol(
        query_ids=np.asarray(ids, np.int64),
        gallery_ids=np.asarray([image.person_id for image in images], np.int64),
        query_texts=tuple(texts),
        gallery_paths=tuple(image.image_path for image in images),
        query_source=np.asarray(source, np.int64),
        gallery_source=np.arange(len(images), dtype=np.int64),
    )


def camera_protocol(
    query: Sequence[CameraImage],
    gallery: Sequence[CameraImage],
    *,
    drop_junk_gallery: bool = True,
) -> RetrievalProtocol:
    """Image queries against an image gallery with camera ids (Market-1501 protocol).

    Args:
      query: query-split records.
      gallery: gallery-split records (bounding_box_test), including -1 / 0 images.
      drop_junk_gallery: remove id -1 images from the gallery (the re-production's 15,913
        Market gallery); `image_reid_metrics` would also ignore them.

    Returns:
      RetrievalProtocol with ids, cameras, paths and gallery_source (kept record indices).
    """
    for name, records in (("query", query), ("gallery", gallery)):
        for i, record in enumerate(records):
            if record.camera_id < 0:
                raise DatasetFormatError(
                    record.image_path, f"negative camera id in {name}", record=i, field="camera_id"
                )
    keep = [i for i, r in enumerate(gallery) if not (drop_junk_gallery and r.person_id == -1)]
    kept = [gallery[i] for i in keep]
    return RetrievalProtocol(
        query_ids=np.asarray([r.person_id for r in query], np.int64),
        gallery_ids=np.asarray([r.person_id for r in kept], np.int64),
        query_cams=np.asarray([r.camera_id for r in query], np.int64),
        gallery_cams=np.asarray([r.camera_id for r in kept], np.int64),
        query_paths=tuple(r.image_path for r in query),
        gallery_paths=tuple(r.image_path for r in kept),
        query_source=np.arange(len(query), dtype=np.int64),
        gallery_source=np.asarray(keep, np.int64),
    )


def attribute_protocol(
    gallery_attributes: np.ndarray, gallery_paths: Sequence[str] | None = None
) -> tuple[np.ndarray, RetrievalProtocol]:
    """One query per distinct gallery attribute vector; relevant = identical vector.

    Args:
      gallery_attributes: [G, A] int attribute vector of each gallery image (its identity's).
      gallery_paths: optional G image paths.

    Returns:
      (query_attributes [Q, A] distinct vectors in lexicographic order, protocol whose ids are
      the index of each vector in that list).
    """
    attrs = np.asarray(gallery_attributes)
    if attrs.ndim != 2:
        raise ValueError(f"gallery_attributes must be [G, A], got {attrs.shape}")
    queries, gallery_ids = np.unique(attrs, axis=0, return_inverse=True)
    return queries, RetrievalProtocol(
        query_ids=np.arange(len(queries), dtype=np.int64),
        gallery_ids=gallery_ids.reshape(-1).astype(np.int64),
        gallery_paths=tuple(gallery_paths) if gallery_paths is not None else None,
        gallery_source=np.arange(len(attrs), dtype=np.int64),
    )
