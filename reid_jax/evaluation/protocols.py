"""Query / gallery arrays of the evaluation protocols, built from parsed dataset records.

* `text_protocol`: text->image person search (ssan §5.1, aptm §1.2): the gallery is every
  image in file order, the queries are all captions flattened in file order, a caption's id is
  its image's person id, and every gallery image of that person is relevant.
* `camera_protocol`: Market-1501 / Duke / CUHK03 image re-id (alignedreid §7.3): junk (-1)
  images are dropped from the gallery, distractors (0) kept; the per-query same-id-same-camera
  junk rule is applied by `retrieval.image_reid_metrics`.
* `attribute_protocol`: attribute->image retrieval (attribute_reid §4): one query per distinct
  attribute vector, relevant = exact match of the whole vector.
* `attribute_followup_protocol`: the follow-up code's Market variant (attribute_reid §4.4):
  query images join the gallery, and the representative identity's images from the query's
  camera are junk.
* `peta_followup_split`: PETA as the follow-up code splits it (attribute_reid §4.3): 200
  held-out semantic IDs, one query each, its source image removed as junk.
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


def attribute_followup_protocol(
    records: np.ndarray,
    person_ids: Sequence[int],
    cameras: Sequence[int],
    from_query_folder: Sequence[bool],
    paths: Sequence[str] | None = None,
) -> tuple[np.ndarray, RetrievalProtocol]:
    """attribute_reid §4.4: one query per distinct vector, instantiated from the first
    query-folder image (file order) of its representative identity (the smallest id with
    that vector; an identity without query images falls back to its first image); gallery =
    every annotated test and query image; relevant = identical vector; junk = an image of the
    representative identity from the same camera (the query image itself included).

    Cameras are encoded as `identity * 1000 + camera`, so the same-id-same-camera junk rule of
    `retrieval.image_reid_metrics` removes exactly those images.

    Args:
      records: [G, A] attribute vector of each image (its identity's).
      person_ids, cameras: [G] identity and camera of each image.
      from_query_folder: [G] whether the image is from `query/`.
      paths: optional G image paths.

    Returns:
      (query vectors [Q, A] in lexicographic order, protocol with ids = vector index + 1).
    """
    queries, protocol = attribute_protocol(records, paths)
    person_ids, cameras = np.asarray(person_ids), np.asarray(cameras)
    from_query_folder = np.asarray(from_query_folder, bool)
    if len({len(records), len(person_ids), len(cameras), len(from_query_folder)}) != 1:
        raise ValueError("records, person_ids, cameras and from_query_folder must be [G]")
    if cameras.max(initial=0) >= 1000:
        raise ValueError("camera ids must be < 1000")
    query_cams = np.empty(len(queries), np.int64)
    for q in range(len(queries)):
        members = np.flatnonzero(protocol.gallery_ids == q)
        representative = person_ids[members].min()
        own = members[person_ids[members] == representative]
        chosen = own[from_query_folder[own]] if from_query_folder[own].any() else own
        query_cams[q] = representative * 1000 + cameras[chosen[0]]
    return queries, dataclasses.replace(
        protocol,
        query_ids=protocol.query_ids + 1,
        gallery_ids=protocol.gallery_ids + 1,
        query_cams=query_cams,
        gallery_cams=person_ids.astype(np.int64) * 1000 + cameras,
    )


@dataclasses.dataclass(frozen=True)
class PetaSplit:
    """The follow-up-code PETA attribute-retrieval split (attribute_reid §4.3).

    Attributes:
      train_images: [N_train] int64 image indices of the training semantic IDs.
      query_attributes: [Q] rows of the held-out semantic IDs' attribute vectors.
      protocol: queries = one per held-out semantic ID (its first image is the source),
        gallery = every image of the held-out IDs; ids are semantic ID + 1 (semantic IDs are
        numbered from 0 by first appearance; the camera protocol reads id 0 as a distractor)
        and cameras are image indices, so the camera junk rule of
        `retrieval.image_reid_metrics` removes exactly the query's source image.
    """

    train_images: np.ndarray
    query_attributes: np.ndarray
    protocol: RetrievalProtocol


def peta_followup_split(labels: np.ndarray, *, num_test: int = 200, seed: int = 1) -> PetaSplit:
    """Semantic IDs (distinct rows, numbered by first appearance) with one image are dropped;
    of the rest, the follow-up code keeps `num_ids - num_test` for training, drawn with NumPy's
    legacy generator (`RandomState(seed).choice(num_ids, num_ids - num_test, replace=False)`,
    what `np.random.seed(1)` + `np.random.choice` give), and tests on the others.

    Args:
      labels: [N, A] image-level binary attributes (PETA: the 105 columns of `load_peta`).
      num_test: held-out semantic IDs.
      seed: the legacy generator's seed.

    Raises:
      ValueError: fewer than `num_test` semantic IDs with two or more images.
    """
    labels = np.asarray(labels)
    rows, first, inverse = np.unique(labels, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # semantic IDs in first-appearance order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    sem = rank[inverse]  # [N] semantic ID of each image
    counts = np.bincount(sem, minlength=len(order))
    kept = np.flatnonzero(counts > 1)  # first-appearance order is kept
    if len(kept) < num_test:
        raise ValueError(f"{len(kept)} semantic IDs with 2+ images, fewer than num_test={num_test}")
    training = np.random.RandomState(seed).choice(len(kept), len(kept) - num_test, replace=False)
    is_train = np.zeros(len(kept), bool)
    is_train[training] = True
    train_ids, test_ids = kept[is_train], kept[~is_train]
    images = np.arange(len(labels))
    gallery = images[np.isin(sem, test_ids)]
    query = np.array([images[sem == s][0] for s in test_ids], np.int64)
    protocol = RetrievalProtocol(
        query_ids=test_ids.astype(np.int64) + 1,
        gallery_ids=sem[gallery].astype(np.int64) + 1,
        query_cams=query,
        gallery_cams=gallery.astype(np.int64),
        query_source=query,
        gallery_source=gallery.astype(np.int64),
    )
    return PetaSplit(
        train_images=images[np.isin(sem, train_ids)].astype(np.int64),
        query_attributes=labels[query],
        protocol=protocol,
    )
