"""Tests for the APTM fine-tuning train/test JSON readers."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.aptm_json import load_aptm_test, load_aptm_train

from .conftest import assert_names, write_jpeg, write_json


def _train_entries():
    return [
        {"image": "CUHK01/0001001.png", "caption": "A man in red.", "image_id": 0},
        {"image": "CUHK01/0001001.png", "caption": "Red coat, black shoes.", "image_id": 0},
        {"image": "Market/0002_c1s1_000451_03.jpg", "caption": "A woman.", "image_id": "1"},
    ]


def _test_entries():
    return [
        {
            "image": "test_query/p1.jpg",
            "caption": ["First of p1.", "Second of p1."],
            "image_id": 11,
        },
        {"image": "test_query/p2.jpg", "caption": ["Only one."], "image_id": 12},
        {"image": "test_query/p3.jpg", "caption": ["A.", "B.", "C."], "image_id": 11},
    ]


def _make(root, name, entries):
    for i, entry in enumerate(entries):
        write_jpeg(os.path.join(root, "imgs", entry["image"]), seed=i)
    return write_json(os.path.join(root, name), entries)


def test_train_file_one_pair_per_element(tmp_path):
    entries = _train_entries()
    path = _make(tmp_path, "cuhk_train.json", entries)
    pairs = load_aptm_train(path, tmp_path / "imgs")
    assert [(p.caption, p.image_id, p.label) for p in pairs] == [
        (e["caption"], str(e["image_id"]), None) for e in entries
    ]
    assert pairs[0].image_path == os.path.join(
        os.path.abspath(tmp_path), "imgs", entries[0]["image"]
    )


def test_test_file_queries_flatten_in_file_order(tmp_path):
    entries = _test_entries()
    path = _make(tmp_path, "cuhk_test.json", entries)
    gallery = load_aptm_test(path, tmp_path / "imgs")
    assert [g.person_id for g in gallery] == [11, 12, 11]
    assert {g.split for g in gallery} == {"test"}
    queries = [(c, g.person_id) for g in gallery for c in g.captions]
    expected = [(c, e["image_id"]) for e in entries for c in e["caption"]]
    assert queries == expected
    first = load_aptm_test(path, tmp_path / "imgs", first_caption_only=True, split="val")
    assert [g.captions for g in first] == [(e["caption"][0],) for e in entries]
    assert {g.split for g in first} == {"val"}


@pytest.mark.parametrize(
    "mutate, record, field",
    [
        (lambda e: e[1].update(caption="a plain string"), 1, "caption"),
        (lambda e: e[2].update(caption=["ok", ""]), 2, "caption[1]"),
        (lambda e: e[0].update(image_id="p11"), 0, "image_id"),
        (lambda e: e[0].pop("image"), 0, "image"),
    ],
)
def test_bad_test_records(tmp_path, mutate, record, field):
    entries = _test_entries()
    _make(tmp_path, "t.json", entries)
    mutate(entries)
    path = write_json(tmp_path / "t.json", entries)
    with pytest.raises(DatasetFormatError) as error:
        load_aptm_test(path, tmp_path / "imgs")
    assert_names(error, path, record, field)


@pytest.mark.parametrize(
    "mutate, record, field",
    [
        (lambda e: e[1].update(caption=["list", "not allowed"]), 1, "caption"),
        (lambda e: e[2].update(caption="   "), 2, "caption"),
        (lambda e: e[0].update(image_id=None), 0, "image_id"),
    ],
)
def test_bad_train_records(tmp_path, mutate, record, field):
    entries = _train_entries()
    _make(tmp_path, "t.json", entries)
    mutate(entries)
    path = write_json(tmp_path / "t.json", entries)
    with pytest.raises(DatasetFormatError) as error:
        load_aptm_train(path, tmp_path / "imgs")
    assert_names(error, path, record, field)


def test_wrong_image_root_is_caught(tmp_path):
    path = _make(tmp_path, "cuhk_test.json", _test_entries())
    with pytest.raises(DatasetFormatError, match="image file not found") as error:
        load_aptm_test(path, tmp_path)  # the config pointed at the parent of imgs/
    assert_names(error, path, 0, "image")
