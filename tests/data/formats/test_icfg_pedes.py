"""Tests for the ICFG-PEDES JSON reader."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.icfg_pedes import load_icfg_pedes

from .conftest import assert_names, write_jpeg, write_json


def _entries():
    # imgs/train and imgs/test come from MSMT17 and do NOT define the split (ssan §1.1).
    return [
        {
            "id": 0,
            "file_path": "train/0000/0000_000_01_0303morning_0015_0.jpg",
            "split": "train",
            "captions": ["A man with a bag."],
            "processed_tokens": [["a", "man", "with", "a", "bag"]],
        },
        {
            "id": 3101,
            "file_path": "test/0007/0007_001_05_0303noon_0100_1.jpg",
            "split": "train",
            "captions": ["Black coat."],
            "processed_tokens": [["black", "coat"]],
        },
        {
            "id": 3102,
            "file_path": "train/0100/0100_003_02_0302noon_0555_0.jpg",
            "split": "test",
            "captions": ["White shoes."],
            "processed_tokens": [["white", "shoes"]],
        },
    ]


def _make(root, entries, name="ICFG-PEDES.json"):
    for i, entry in enumerate(entries):
        write_jpeg(os.path.join(root, "imgs", entry["file_path"]), seed=i)
    return write_json(os.path.join(root, name), entries)


@pytest.mark.parametrize("name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_reads_either_file_name_with_zero_based_ids(tmp_path, name):
    entries = _entries()
    _make(tmp_path, entries, name)
    records = load_icfg_pedes(tmp_path)
    assert [r.person_id for r in records] == [e["id"] for e in entries]  # 0-based, as stored
    assert [r.split for r in records] == ["train", "train", "test"]  # from the field, not folder
    assert [r.image_path for r in records] == [
        os.path.join(os.path.abspath(tmp_path), "imgs", e["file_path"]) for e in entries
    ]
    assert [r.captions for r in records] == [tuple(e["captions"]) for e in entries]
    assert [r.tokens for r in records] == [
        tuple(tuple(t) for t in e["processed_tokens"]) for e in entries
    ]


def test_duplicate_paths_are_kept_and_counted(tmp_path, warnings_log):
    entries = _entries()
    entries.append(dict(entries[1], captions=["Again."], processed_tokens=[["again"]]))
    entries.append(dict(entries[0], id=55))
    _make(tmp_path, entries)
    assert len(load_icfg_pedes(tmp_path)) == 5
    assert "1 records repeat an earlier image path with the same id (kept)" in warnings_log.text
    assert "1 records repeat an earlier image path with the DIFFERENT id" in warnings_log.text


def test_val_split_is_unknown_for_icfg(tmp_path):
    entries = _entries()
    entries[2]["split"] = "val"
    json_path = _make(tmp_path, entries)
    with pytest.raises(DatasetFormatError, match="unknown split value 'val'") as error:
        load_icfg_pedes(tmp_path)
    assert_names(error, json_path, 2, "split")


@pytest.mark.parametrize(
    "mutate, record, field",
    [
        (lambda e: e[1].pop("processed_tokens"), 1, "processed_tokens"),
        (lambda e: e[0].update(id=-1), 0, "id"),
        (lambda e: e[0].update(id=1.0), 0, "id"),
        (lambda e: e[2].update(captions=[""]), 2, "captions[0]"),
        (lambda e: e[2].update(captions=[]), 2, "captions"),
    ],
)
def test_bad_records(tmp_path, mutate, record, field):
    entries = _entries()
    mutate(entries)
    json_path = _make(tmp_path, entries)
    with pytest.raises(DatasetFormatError) as error:
        load_icfg_pedes(tmp_path)
    assert_names(error, json_path, record, field)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="ICFG_PEDES.json"):
        load_icfg_pedes(tmp_path)
