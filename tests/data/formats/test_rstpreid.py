"""Tests for the RSTPReid `data_captions.json` reader."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.rstpreid import load_rstpreid
from reid_jax.data.records import CaptionedImage

from .conftest import assert_names, truncate, write_jpeg, write_json


def _entries():
    return [
        {
            "id": 0,
            "img_path": "0000_c14_0031.jpg",
            "captions": ["A man.", "He runs."],
            "split": "train",
        },
        {
            "id": 3700,
            "img_path": "3700_c7_0012.jpg",
            "captions": ["A girl.", "Pink bag."],
            "split": "val",
        },
        {
            "id": 4100,
            "img_path": "4100_c2_0001.jpg",
            "captions": ["Tall man.", "Blue cap."],
            "split": "TEST",
        },
    ]


def _make(root, entries):
    for i, entry in enumerate(entries):
        write_jpeg(os.path.join(root, "imgs", entry["img_path"]), seed=i)
    return write_json(os.path.join(root, "data_captions.json"), entries)


def test_reads_records(tmp_path):
    entries = _entries()
    _make(tmp_path, entries)
    expected = [
        CaptionedImage(
            image_path=os.path.join(os.path.abspath(tmp_path), "imgs", e["img_path"]),
            person_id=e["id"],
            captions=tuple(e["captions"]),
            tokens=None,
            split=e["split"].lower(),
        )
        for e in entries
    ]
    assert load_rstpreid(tmp_path) == expected


@pytest.mark.parametrize(
    "mutate, record, field, match",
    [
        (lambda e: e[1].update(split="dev"), 1, "split", "unknown split"),
        (lambda e: e[0].update(captions=["A man.", " \n"]), 0, "captions[1]", "empty caption"),
        (lambda e: e[2].pop("img_path"), 2, "img_path", "missing required field"),
        (lambda e: e[2].update(captions=[1, 2]), 2, "captions[0]", "expected a string"),
    ],
)
def test_bad_records(tmp_path, mutate, record, field, match):
    entries = _entries()
    _make(tmp_path, entries)
    mutate(entries)
    json_path = write_json(tmp_path / "data_captions.json", entries)
    with pytest.raises(DatasetFormatError, match=match) as error:
        load_rstpreid(tmp_path)
    assert_names(error, json_path, record, field)


def test_truncated_json_and_missing_image(tmp_path):
    json_path = _make(tmp_path, _entries())
    os.remove(tmp_path / "imgs" / "3700_c7_0012.jpg")
    with pytest.raises(DatasetFormatError, match="image file not found") as error:
        load_rstpreid(tmp_path)
    assert_names(error, json_path, 1, "img_path")
    truncate(json_path, 0.3)
    with pytest.raises(DatasetFormatError, match="truncated"):
        load_rstpreid(tmp_path)
