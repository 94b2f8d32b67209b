"""Tests for the DukeMTMC-reID folder reader."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.dukemtmc import load_dukemtmc, parse_duke_name

FILES = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051781.jpg"],
    "query": ["0005_c8_f0000123.jpg"],
    "bounding_box_test": ["0005_c1_f0042555.jpg", "7140_c7_f0102938.jpg"],
}
SPLITS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}


def _make(root):
    for folder, names in FILES.items():
        os.makedirs(root / folder, exist_ok=True)
        for name in names:
            (root / folder / name).write_bytes(b"jpeg")
    return root


def test_reads_all_splits(tmp_path):
    root = _make(tmp_path / "DukeMTMC-reID")
    records = load_dukemtmc(tmp_path)
    expected = []
    for folder, split in SPLITS.items():
        for name in sorted(FILES[folder]):
            pid, cam = name.split("_")[:2]
            expected.append(
                (
                    os.path.join(os.path.abspath(root), folder, name),
                    int(pid),
                    int(cam[1:]) - 1,
                    split,
                )
            )
    assert [(r.image_path, r.person_id, r.camera_id, r.split) for r in records] == expected
    assert max(r.camera_id for r in records) == 7


@pytest.mark.parametrize(
    "name",
    [
        "0005_c9_f0046985.jpg",
        "0005_c0_f0046985.jpg",
        "-1_c2_f0046985.jpg",
        "0005_c2s1_000451_03.jpg",
    ],
)
def test_bad_names(tmp_path, name):
    root = _make(tmp_path)
    (root / "bounding_box_test" / name).write_bytes(b"jpeg")
    with pytest.raises(DatasetFormatError, match="field 'name'") as error:
        load_dukemtmc(root)
    assert name in str(error.value)
    with pytest.raises(DatasetFormatError):
        parse_duke_name(name)


def test_id_0000_outside_the_gallery_is_skipped(tmp_path, warnings_log):
    root = _make(tmp_path)
    before = load_dukemtmc(root)
    (root / "bounding_box_train" / "0000_c1_f0000001.jpg").write_bytes(b"jpeg")
    (root / "query" / "0000_c2_f0000002.jpg").write_bytes(b"jpeg")
    assert load_dukemtmc(root) == before
    assert "2 junk/distractor images (id 0) skipped outside the gallery" in warnings_log.text
