"""SSAN example preparation: records -> encoded caption arrays, labels and partner lists.

Reproduces the offline preprocessing of ssan §1.3 in memory:
- training: one record per (image, caption), grouped by identity in order of first appearance,
  then image by image, then caption by caption (§1.3.6); labels relabelled per dataset (§1.3.5);
  `same_id_index` partner lists stored as CSR arrays;
- test: gallery images with raw ids, and one query per caption (§1.3.7).
Caption encoding itself (vocabulary lookup, deletion of unknown words, truncation/padding to T,
empty-caption guard) is `reid_jax.text.vocab.encode_batch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.records import CaptionedImage

if TYPE_CHECKING:
    from reid_jax.text.vocab import Vocabulary

# ssan §1.3.5: these CUHK-PEDES training identities own one image each (no partner caption).
CUHK_DROPPED_IDS = (1369, 4116, 6116)


@dataclasses.dataclass(frozen=True)
class SsanTrainExamples:
    """SSAN training records (one per image-caption pair), as parallel arrays.

    Attributes:
      image_paths: [I] one path per training image (after filtering), in record order.
      image_index: int64 [N] image of each record (index into `image_paths`).
      labels: int32 [N] class labels in 0 ... num_classes - 1.
      person_ids: int64 [N] identities as stored in the file.
      captions: int32 [N, T] word ids, 0-padded.
      lengths: int32 [N] in 1 ... T.
      partner_offsets: int64 [N + 1] CSR offsets into `partner_indices`.
      partner_indices: int64 [M] for record i, `partner_indices[partner_offsets[i]:
        partner_offsets[i+1]]` are the global record indices of all captions of all OTHER
        images of the same identity, ascending (the reference's `same_id_index`).
      num_classes: C, number of ID-classifier outputs (max label + 1).
    """

    image_paths: list[str]
    image_index: np.ndarray
    labels: np.ndarray
    person_ids: np.ndarray
    captions: np.ndarray
    lengths: np.ndarray
    partner_offsets: np.ndarray
    partner_indices: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class SsanTestExamples:
    """SSAN test split: gallery images and caption queries (ssan §1.3.7).

    Attributes:
      gallery_paths: [G] image paths in record order.
      gallery_ids: int64 [G] raw person ids (only equality matters).
      query_captions: int32 [Q, T] word ids.
      query_lengths: int32 [Q].
      query_ids: int64 [Q] raw person id of each query's image.
      query_texts: [Q] raw sentences.
      query_image_index: int64 [Q] index of the query's own image in the gallery.
    """

    gallery_paths: list[str]
    gallery_ids: np.ndarray
    query_captions: np.ndarray
    query_lengths: np.ndarray
    query_ids: np.ndarray
    query_texts: list[str]
    query_image_index: np.ndarray


def caption_tokens(record: CaptionedImage) -> list[list[str]]:
    """Token lists of a record's captions: the file's `processed_tokens` when present.

    Otherwise each caption is tokenised by `reid_jax.text.cleaning.tokenize_caption`.

    Args:
      record: one image with its captions.

    Returns:
      one token list per caption.
    """
    if record.tokens is not None:
        return [list(tokens) for tokens in record.tokens]
    from reid_jax.text.cleaning import tokenize_caption  # lazy: text is an optional layer

    return [tokenize_caption(caption) for caption in record.captions]


def build_ssan_vocabulary_from_records(
    records: Sequence[CaptionedImage], *, min_count: int = 2
) -> Vocabulary:
    """Builds the SSAN word vocabulary from training records (ssan §1.3.2).

    Args:
      records: training-split records, in file order (first-occurrence order matters).
      min_count: keep words seen at least this often.

    Returns:
      a `reid_jax.text.vocab.Vocabulary`.
    """
    from reid_jax.text.vocab import build_vocabulary

    return build_vocabulary(
        (tokens for record in records for tokens in caption_tokens(record)), min_count=min_count
    )


def relabel_cuhk(person_ids: np.ndarray) -> np.ndarray:
    """Maps CUHK-PEDES 1-based ids (without 1369/4116/6116) to 0-based labels (ssan §1.3.5).

    Args:
      person_ids: int [N] raw ids >= 1, none of them a dropped id.

    Returns:
      int32 [N]: id - 1 - (number of dropped ids below id).
    """
    person_ids = np.asarray(person_ids, np.int64)
    below = np.searchsorted(np.asarray(CUHK_DROPPED_IDS), person_ids, side="left")
    return (person_ids - 1 - below).astype(np.int32)


def _labels(records: Sequence[CaptionedImage], dataset: str) -> tuple[np.ndarray, int]:
    """Per-image labels and class count for the dataset's relabelling rule."""
    ids = np.asarray([r.person_id for r in records], np.int64)
    if dataset == "cuhk_pedes":
        bad = np.flatnonzero(ids < 1)
        labels = relabel_cuhk(ids)
    elif dataset == "icfg_pedes":
        bad = np.flatnonzero(ids < 0)
        labels = ids.astype(np.int32)  # ssan §1.3.5: ICFG labels are used as stored
    else:
        # Generic datasets: contiguous 0-based labels in order of first appearance.
        bad = np.zeros(0, np.int64)
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        labels = rank[inverse].astype(np.int32)
    if bad.size:
        record = records[int(bad[0])]
        raise DatasetFormatError(
            record.image_path,
            f"person id {record.person_id} is out of range for {dataset}",
            record=int(bad[0]),
            field="person_id",
        )
    return labels, int(labels.max()) + 1 if labels.size else 0


def _group_by_identity(records: Sequence[CaptionedImage]) -> list[CaptionedImage]:
    """Stable reorder: identities in order of first appearance, images in file order."""
    first_seen: dict[int, int] = {}
    for record in records:
        first_seen.setdefault(record.person_id, len(first_seen))
    order = sorted(range(len(records)), key=lambda i: first_seen[records[i].person_id])
    return [records[i] for i in order]


def partner_lists(
    identity_of_record: np.ndarray, image_of_record: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CSR partner lists: all records of the same identity but another image (ssan §1.3.6).

    Args:
      identity_of_record: int [N]; records of one identity must be contiguous.
      image_of_record: int [N]; records of one image must be contiguous (inside the identity).

    Returns:
      partner_offsets: int64 [N + 1]. partner_indices: int64 [M], ascending per record.
    """
    n = len(identity_of_record)
    index = np.arange(n)

    def run_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        change = np.flatnonzero(np.diff(keys)) + 1
        starts = np.concatenate([[0], change])
        stops = np.concatenate([change, [n]])
        run = np.searchsorted(starts, index, side="right") - 1
        return starts[run], stops[run]

    id_start, id_stop = run_bounds(np.asarray(identity_of_record))
    image_start, image_stop = run_bounds(np.asarray(image_of_record))
    before = image_start - id_start  # partners preceding the record's own image
    counts = (id_stop - id_start) - (image_stop - image_start)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    owner = np.repeat(index, counts)
    j = np.arange(offsets[-1]) - offsets[owner]
    indices = np.where(
        j < before[owner], id_start[owner] + j, image_stop[owner] + j - before[owner]
    )
    return offsets, indices.astype(np.int64)


def prepare_ssan_train(
    records: Sequence[CaptionedImage],
    vocab: Vocabulary,
    *,
    dataset: str,
    max_length: int = 100,
    table_size: int | None = None,
) -> SsanTrainExamples:
    """Turns training records into SSAN training examples (ssan §1.3.5-6, §1.4).

    Args:
      records: the training split's images (file order).
      vocab: the SSAN word vocabulary built on these records.
      dataset: 'cuhk_pedes' (drop ids 1369/4116/6116, relabel to 0 ... 10,999),
        'icfg_pedes' (labels as stored) or any other name (contiguous 0-based labels in order
        of first appearance).
      max_length: T.
      table_size: embedding-table size to check V + 1 against (5000 CUHK, 2500 ICFG).

    Returns:
      `SsanTrainExamples` with N = total number of captions of the kept images.

    Raises:
      DatasetFormatError: an identity has a single image (no partner caption), naming it, or
        an id is out of range for the dataset's relabelling.
    """
    from reid_jax.text.vocab import encode_batch

    if dataset == "cuhk_pedes":
        records = [r for r in records if r.person_id not in CUHK_DROPPED_IDS]
    images = _group_by_identity(list(records))
    if not images:
        raise ValueError("prepare_ssan_train: no training records")
    image_labels, num_classes = _labels(images, dataset)
    captions_per_image = np.asarray([len(r.captions) for r in images], np.int64)
    image_index = np.repeat(np.arange(len(images)), captions_per_image)
    person_ids = np.asarray([r.person_id for r in images], np.int64)[image_index]
    tokens = [t for r in images for t in caption_tokens(r)]
    captions, lengths = encode_batch(vocab, tokens, max_length=max_length, table_size=table_size)
    offsets, indices = partner_lists(person_ids, image_index)
    lonely = np.flatnonzero(np.diff(offsets) == 0)
    if lonely.size:
        record = images[int(image_index[lonely[0]])]
        raise DatasetFormatError(
            record.image_path,
            f"identity {record.person_id} has a single training image, so its captions have no "
            "partner caption (ssan §1.4); drop the identity before training",
            record=f"person_id {record.person_id}",
            field="person_id",
        )
    return SsanTrainExamples(
        image_paths=[r.image_path for r in images],
        image_index=image_index.astype(np.int64),
        labels=image_labels[image_index].astype(np.int32),
        person_ids=person_ids,
        captions=captions,
        lengths=lengths,
        partner_offsets=offsets,
        partner_indices=indices,
        num_classes=num_classes,
    )


def prepare_ssan_test(
    records: Sequence[CaptionedImage], vocab: Vocabulary, *, max_length: int = 100
) -> SsanTestExamples:
    """Turns test records into a gallery and caption queries (ssan §1.3.7).

    Args:
      records: the test split's images (file order); ids are kept raw.
      vocab: the training vocabulary (out-of-vocabulary words are dropped).
      max_length: T.

    Returns:
      `SsanTestExamples`; queries in record order, caption by caption.
    """
    from reid_jax.text.vocab import encode_batch

    records = list(records)
    gallery_ids = np.asarray([r.person_id for r in records], np.int64)
    per_image = np.asarray([len(r.captions) for r in records], np.int64)
    query_image_index = np.repeat(np.arange(len(records)), per_image).astype(np.int64)
    tokens = [t for r in records for t in caption_tokens(r)]
    captions, lengths = encode_batch(vocab, tokens, max_length=max_length)
    return SsanTestExamples(
        gallery_paths=[r.image_path for r in records],
        gallery_ids=gallery_ids,
        query_captions=captions,
        query_lengths=lengths,
        query_ids=gallery_ids[query_image_index],
        query_texts=[c for r in records for c in r.captions],
        query_image_index=query_image_index,
    )
