"""Attribute->image retrieval data of one dataset in the model encoding (attribute_reid §2, §4).

`load_attribute_dataset(data_config)` returns an `AttributeDataset`: the training images with
their PK group (identity; PETA: semantic ID) and attribute vectors, the semantic-ID table,
and the test gallery with its queries and protocol.

* Market-1501 (and the embedded copy): `market_attribute.mat` identity labels, 27 fields ->
  the 30-column encoding (age one-hot, §2.1); gallery = `bounding_box_test` images of the
  annotated test identities (13,115 on the real data; distractors and junk have no
  attributes), `eval.protocol='with_query'` adds `query/`; one query per distinct test
  vector, relevant = identical vector, no junk (§4.1); `eval.protocol='followup'` is the
  follow-up code's variant (§4.4).
* DukeMTMC-reID: `duke_attribute.mat`, 23 binary fields; the file's invalid 0 entries (read
  as -1) become 0 as §2.2 proposes, logged; gallery and queries as Market (§4.2).
* PETA: image-level labels, the follow-up code's split (§4.3): 200 held-out semantic IDs,
  one query each, its own source image removed as junk.

Groups (§3.1): the columns each attention map and head serve; `softmax_groups` are the
(start, stop) spans that are one-hot (Market age).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from absl import logging

from reid_jax.data import dataset_root
from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, attributes
from reid_jax.evaluation import protocols
from reid_jax.text import attribute_query

DATASETS = ("embedded", "market1501", "dukemtmc", "peta")
ATTRIBUTE_FILES = {
    "embedded": ("market_attribute.mat",),
    "market1501": ("market_attribute.mat", os.path.join("attribute", "market_attribute.mat")),
    "dukemtmc": ("duke_attribute.mat", os.path.join("attribute", "duke_attribute.mat")),
}
PETA_COLOUR_FAMILIES = ("upperBody", "lowerBody", "hair", "footwear")
PETA_COLOURS = (
    "Black",
    "Blue",
    "Brown",
    "Green",
    "Grey",
    "Orange",
    "Pink",
    "Purple",
    "Red",
    "White",
    "Yellow",
)
MARKET_COLUMN_NAMES = (
    attributes.MARKET_ATTRIBUTE_NAMES[:9]
    + ("young", "teenager", "adult", "old")
    + attributes.MARKET_ATTRIBUTE_NAMES[10:]
)


@dataclasses.dataclass(frozen=True)
class AttributeDataset:
    """Training and test data of attribute->image retrieval (A model columns).

    Attributes:
      column_names: [A] names of the model columns.
      groups: the columns of each attention group (together every column once).
      softmax_groups: (start, stop) one-hot spans.
      train_paths: [N] training images.
      train_groups: [N] int32 PK group of each image (0..P-1: identity, PETA semantic ID).
      group_attributes: [P, A] int32 the attribute vector of each PK group.
      group_records: [P, A'] int32 the same in the dataset's own coding.
      group_sids: [P] int32 the semantic ID of each PK group.
      sid_attributes: [S] x [A] int32 the distinct training vectors (semantic-ID table).
      gallery_paths: [G] test images.
      gallery_attributes: [G, A] their attribute vectors.
      gallery_records: [G, A'] the same in the dataset's own coding.
      query_attributes: [Q, A] one query vector per query.
      query_records: [Q, A'] the same queries in the dataset's own coding (Market: 27 fields),
        what `vocabulary` reads and writes.
      vocabulary: the query language's fields over the dataset coding (`text.attribute_query`).
      protocol: query/gallery ids (+1, so none is 0) and cameras (`None` = no junk).
    """

    column_names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    softmax_groups: tuple[tuple[int, int], ...]
    train_paths: tuple[str, ...]
    train_groups: np.ndarray
    group_attributes: np.ndarray
    group_records: np.ndarray
    group_sids: np.ndarray
    sid_attributes: np.ndarray
    gallery_paths: tuple[str, ...]
    gallery_attributes: np.ndarray
    gallery_records: np.ndarray
    query_attributes: np.ndarray
    query_records: np.ndarray
    vocabulary: attribute_query.AttributeVocabulary
    protocol: protocols.RetrievalProtocol

    def query_texts(self) -> tuple[str, ...]:
        """Each query as a query-language string (for pictures and reports)."""
        return tuple(attribute_query.format_query(q, self.vocabulary) for q in self.query_records)

    @property
    def num_columns(self) -> int:
        """A."""
        return len(self.column_names)


def market_groups() -> tuple[tuple[int, ...], ...]:
    """Market's 12 groups over the 30 columns: 9 fields, age (4), upper (8), lower (9)."""
    return tuple((i,) for i in range(9)) + (
        tuple(range(9, 13)),
        tuple(range(13, 21)),
        tuple(range(21, 30)),
    )


def duke_groups() -> tuple[tuple[int, ...], ...]:
    """Duke's 10 groups over the 23 columns: 8 fields, upper colours (8), lower colours (7)."""
    return tuple((i,) for i in range(8)) + (tuple(range(8, 16)), tuple(range(16, 23)))


def peta_groups(names: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """One group per PETA column, except that each colour family (upper body, lower body,
    hair, footwear x 11 colours) is one group, placed at its first column."""
    family_of = {
        f"{family}{colour}": family for family in PETA_COLOUR_FAMILIES for colour in PETA_COLOURS
    }
    groups: list[list[int]] = []
    family_group: dict[str, list[int]] = {}
    for column, name in enumerate(names):
        family = family_of.get(name)
        if family is None:
            groups.append([column])
        elif family in family_group:
            family_group[family].append(column)
        else:
            family_group[family] = [column]
            groups.append(family_group[family])
    return tuple(tuple(g) for g in groups)


def semantic_ids(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table [S, A] distinct rows in lexicographic order, [N] index of each row in it)."""
    table, inverse = np.unique(np.asarray(vectors), axis=0, return_inverse=True)
    return table.astype(np.int32), inverse.reshape(-1).astype(np.int32)


def _attribute_file(data_config: Any, root: str) -> str:
    if data_config.get("attribute_file"):
        return str(data_config.attribute_file)
    return _files.find_file(
        root, ATTRIBUTE_FILES[data_config.dataset], f"{data_config.dataset} attribute file"
    )


PROTOCOLS = ("standard", "with_query", "followup")


def _identity_dataset(data_config: Any, protocol_name: str) -> AttributeDataset:
    """Market-1501 / embedded / Duke: identity-level labels (attribute_reid §4.1-4.2)."""
    from reid_jax.data.formats import dukemtmc, market1501

    duke = data_config.dataset == "dukemtmc"
    root = str(dataset_root.dataset_root(data_config, "Market-1501"))
    mat_path = _attribute_file(data_config, root)
    records = dukemtmc.load_dukemtmc(root) if duke else market1501.load_market1501(root)
    labels = (attributes.load_duke_attributes if duke else attributes.load_market_attributes)(
        mat_path
    )
    by_split = {split: {} for split in attributes.SPLITS}
    for record in labels:
        by_split[record.split][int(record.key)] = np.asarray(record.labels, np.int32)
    if duke:
        unknown = sum(int((v < 0).sum()) for split in by_split.values() for v in split.values())
        if unknown:
            logging.warning(
                "%s: %d invalid (0) attribute values read as 0 ('no' / 'short'), as "
                "attribute_reid §2.2 proposes",
                mat_path,
                unknown,
            )
        encode = lambda v: np.maximum(v, 0)  # noqa: E731
        names, groups, softmax_groups = attributes.DUKE_ATTRIBUTE_NAMES, duke_groups(), ()
    else:
        encode = attributes.market_model_encoding
        names, groups, softmax_groups = MARKET_COLUMN_NAMES, market_groups(), ((9, 13),)

    train = [r for r in records if r.split == "train"]
    missing = sorted({r.person_id for r in train} - set(by_split["train"]))
    if missing:
        raise DatasetFormatError(
            mat_path,
            f"{len(missing)} training identities of {root} have no attributes, e.g. {missing[:5]}",
            field="train.image_index",
        )
    train_ids = np.asarray([r.person_id for r in train])
    identities, train_groups = np.unique(train_ids, return_inverse=True)
    group_records = np.stack([by_split["train"][int(i)] for i in identities])
    group_attributes = encode(group_records)
    sid_table, group_sids = semantic_ids(group_attributes)

    splits = ("gallery",) if protocol_name == "standard" else ("gallery", "query")
    gallery = [r for r in records if r.split in splits and r.person_id in by_split["test"]]
    if not gallery:
        raise DatasetFormatError(
            mat_path, f"no test image of {root} has an annotated identity", field="test"
        )
    gallery_records = np.stack([by_split["test"][r.person_id] for r in gallery])
    paths = [r.image_path for r in gallery]
    if protocol_name == "followup":
        query_records, protocol = protocols.attribute_followup_protocol(
            gallery_records,
            [r.person_id for r in gallery],
            [r.camera_id for r in gallery],
            [r.split == "query" for r in gallery],
            paths,
        )
    else:
        query_records, protocol = protocols.attribute_protocol(gallery_records, paths)
        protocol = dataclasses.replace(
            protocol, query_ids=protocol.query_ids + 1, gallery_ids=protocol.gallery_ids + 1
        )
    return AttributeDataset(
        column_names=tuple(names),
        groups=groups,
        softmax_groups=softmax_groups,
        train_paths=tuple(r.image_path for r in train),
        train_groups=train_groups.astype(np.int32),
        group_attributes=group_attributes.astype(np.int32),
        group_records=group_records.astype(np.int32),
        group_sids=group_sids,
        sid_attributes=sid_table,
        gallery_paths=tuple(r.image_path for r in gallery),
        gallery_attributes=encode(gallery_records).astype(np.int32),
        gallery_records=gallery_records.astype(np.int32),
        query_attributes=encode(query_records).astype(np.int32),
        query_records=query_records.astype(np.int32),
        vocabulary=attribute_query.DUKE if duke else attribute_query.MARKET,
        protocol=protocol,
    )


def _peta_dataset(data_config: Any) -> AttributeDataset:
    """PETA with the follow-up code's split (attribute_reid §4.3), all 105 columns."""
    from reid_jax.data.formats import peta

    annotations = peta.load_peta(data_config.root)
    labels = annotations.labels().astype(np.int32)
    split = protocols.peta_followup_split(labels)
    paths = [r.key for r in annotations.records]
    train_labels = labels[split.train_images]
    sid_table, train_groups = semantic_ids(train_labels)
    gallery_index = split.protocol.gallery_source
    protocol = dataclasses.replace(
        split.protocol, gallery_paths=tuple(paths[i] for i in gallery_index)
    )
    return AttributeDataset(
        column_names=annotations.attribute_names,
        groups=peta_groups(annotations.attribute_names),
        softmax_groups=(),
        train_paths=tuple(paths[i] for i in split.train_images),
        train_groups=train_groups,
        group_attributes=sid_table,
        group_records=sid_table,
        group_sids=np.arange(len(sid_table), dtype=np.int32),
        sid_attributes=sid_table,
        gallery_paths=protocol.gallery_paths,
        gallery_attributes=labels[gallery_index],
        gallery_records=labels[gallery_index],
        query_attributes=split.query_attributes.astype(np.int32),
        query_records=split.query_attributes.astype(np.int32),
        vocabulary=attribute_query.binary_vocabulary("PETA", annotations.attribute_names),
        protocol=protocol,
    )


_CACHE: dict[tuple, AttributeDataset] = {}


def load_attribute_dataset(data_config: Any, *, protocol: str = "standard") -> AttributeDataset:
    """The configured dataset (`data.dataset` in DATASETS), parsed once per process.

    Args:
      data_config: `config.data` (dataset, root, optional attribute_file; embedded options).
      protocol: Market/Duke test protocol: 'standard' (gallery = annotated test images,
        §4.1-4.2), 'with_query' (+ the query images, §4.1 "+query") or 'followup' (the
        follow-up code's variant, §4.4); PETA has its own (§4.3).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"config.eval.protocol: unknown protocol '{protocol}', choose from {PROTOCOLS}"
        )
    if data_config.dataset not in DATASETS:
        raise ValueError(
            f"config.data.dataset: unknown dataset '{data_config.dataset}', choose from {DATASETS}"
        )
    key = (
        data_config.dataset,
        str(data_config.root),
        str(data_config.get("attribute_file", "")),
        dataset_root.embedded_folder_name(data_config),
        protocol,
    )
    if key not in _CACHE:
        if data_config.dataset == "peta":
            _CACHE[key] = _peta_dataset(data_config)
        else:
            _CACHE[key] = _identity_dataset(data_config, protocol)
    return _CACHE[key]


def query_vocabulary(dataset: str) -> attribute_query.AttributeVocabulary:
    """The query language's vocabulary of an identity-labelled dataset (Market, Duke)."""
    if dataset in ("embedded", "market1501"):
        return attribute_query.MARKET
    if dataset == "dukemtmc":
        return attribute_query.DUKE
    raise ValueError(f"attribute queries over '{dataset}' need its column names (not supported)")


def model_encoding(dataset: str, records: np.ndarray) -> np.ndarray:
    """Dataset-coded vectors [..., A'] (-1 = not asked) -> the model's columns [..., A];
    -1 stays -1 (over a whole one-hot group)."""
    records = np.asarray(records)
    if dataset in ("embedded", "market1501"):
        return attributes.market_model_encoding(records)
    return records
