"""Tests for the MALS annotation reader."""

from __future__ import annotations

import os

import numpy as np
import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.mals import load_mals
from reid_jax.data.records import CaptionPair

from .conftest import assert_names, truncate, write_jpeg, write_json


def _file_entries(subset, n, rng):
    return [
        {
            "image": f"gene_crop/{subset}/{i}.jpg",
            "caption": f"A person number {i}.",
            "image_id": f"{subset}_{i}",
            "label": rng.integers(-1, 2, 27).tolist(),
        }
        for i in range(n)
    ]


@pytest.fixture
def mals(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for subset, n in (("c_g_a_0", 3), ("4x", 2)):
        entries = _file_entries(subset, n, rng)
        for i, entry in enumerate(entries):
            write_jpeg(tmp_path / "images" / entry["image"], seed=i)
        files[subset] = (write_json(tmp_path / f"{subset}.json", entries), entries)
    return tmp_path, files


def test_concatenates_files_in_given_order(mals):
    root, files = mals
    order = ["4x", "c_g_a_0"]
    pairs = load_mals([files[s][0] for s in order], root / "images")
    expected = [
        CaptionPair(
            image_path=os.path.join(os.path.abspath(root / "images"), e["image"]),
            caption=e["caption"],
            image_id=e["image_id"],
            label=tuple(e["label"]),
        )
        for s in order
        for e in files[s][1]
    ]
    assert pairs == expected


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.update(label=e["label"][:26]), "label"),
        (lambda e: e["label"].__setitem__(5, 2), "label[5]"),
        (lambda e: e["label"].__setitem__(7, True), "label[7]"),
        (lambda e: e["label"].__setitem__(0, "1"), "label[0]"),
        (lambda e: e.update(label=None), "label"),
        (lambda e: e.pop("caption"), "caption"),
        (lambda e: e.update(caption=""), "caption"),
        (lambda e: e.update(image_id=[1]), "image_id"),
    ],
)
def test_bad_records(mals, mutate, field):
    root, files = mals
    path, entries = files["c_g_a_0"]
    mutate(entries[1])
    write_json(path, entries)
    with pytest.raises(DatasetFormatError) as error:
        load_mals([files["4x"][0], path], root / "images")
    assert_names(error, path, 1, field)


def test_integer_image_id_becomes_string_and_missing_image(mals):
    root, files = mals
    path, entries = files["4x"]
    entries[0]["image_id"] = 17
    write_json(path, entries)
    assert load_mals([path], root / "images")[0].image_id == "17"
    os.remove(root / "images" / entries[1]["image"])
    with pytest.raises(DatasetFormatError, match="not found") as error:
        load_mals([path], root / "images")
    assert_names(error, path, 1, "image")


def test_truncated_file(mals):
    root, files = mals
    truncate(files["4x"][0])
    with pytest.raises(DatasetFormatError, match="truncated") as error:
        load_mals([files["c_g_a_0"][0], files["4x"][0]], root / "images")
    assert_names(error, files["4x"][0])
