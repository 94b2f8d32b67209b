"""Tests for the Market-1501 folder reader and file-name parser."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.market1501 import load_market1501, parse_market_name

FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c3s1_000551_01.jpg",
        "1500_c6s4_001977_01.jpg",
    ],
    "query": ["0002_c2s1_000301_00.jpg", "0750_c5s2_066010_00.jpg"],
    "bounding_box_test": [
        "-1_c3s2_012345_01.jpg",
        "-1_c1s1_000401_03.jpg",
        "0000_c6s1_000001_02.jpg",
        "0002_c1s1_000100_00.jpg",
        "0750_c4s3_000123_04.jpg",
    ],
}
SPLITS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}


def _reference_parse(name):
    """Independent parse: id is everything before '_c', the camera the next character."""
    head, tail = name.split("_c", 1)
    return int(head), int(tail[0]) - 1


def _make(root):
    for folder, names in FILES.items():
        os.makedirs(root / folder, exist_ok=True)
        for name in names:
            (root / folder / name).write_bytes(b"\xff\xd8 tiny")  # content is never decoded
    return root


def _expected(root):
    out = []
    for folder, split in SPLITS.items():
        for name in sorted(FILES[folder]):
            pid, cam = _reference_parse(name)
            out.append((os.path.join(os.path.abspath(root), folder, name), pid, cam, split))
    return out


def test_reads_all_splits_with_junk_and_distractors(tmp_path, warnings_log):
    root = _make(tmp_path / "Market-1501-v15.09.15")
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"x")
    records = load_market1501(root)
    got = [(r.image_path, r.person_id, r.camera_id, r.split) for r in records]
    assert got == _expected(root)
    gallery = [r for r in records if r.split == "gallery"]
    assert sum(r.person_id == -1 for r in gallery) == 2  # junk kept, flagged by -1
    assert sum(r.person_id == 0 for r in gallery) == 1  # distractor
    assert "1 non-JPEG entries skipped" in warnings_log.text
    # The parent folder works too.
    assert load_market1501(tmp_path) == records


@pytest.mark.parametrize("folder", ["bounding_box_train", "query"])
def test_junk_and_distractors_outside_the_gallery_are_never_identities(
    tmp_path, warnings_log, folder
):
    # alignedreid §1.3: -1 junk and 0000 distractors belong to bounding_box_test only.
    root = _make(tmp_path)
    for name in ("-1_c2s1_000100_01.jpg", "0000_c4s2_000200_02.jpg"):
        (root / folder / name).write_bytes(b"x")
    records = load_market1501(root)
    got = [(r.image_path, r.person_id, r.camera_id, r.split) for r in records]
    assert got == _expected(root)  # exactly the records without the two extra files
    split = SPLITS[folder]
    assert not {-1, 0} & {r.person_id for r in records if r.split == split}
    assert "1 junk/distractor images (id -1) skipped outside the gallery" in warnings_log.text
    assert "1 junk/distractor images (id 0) skipped outside the gallery" in warnings_log.text


def test_unicode_digits_and_huge_ids_are_not_ids():
    for name in ("٠٠٠٢_c1s1_000451_03.jpg", "0002_c١s1_000451_03.jpg", "9" * 19 + "_c1s1_0_0.jpg"):
        with pytest.raises(DatasetFormatError, match="field 'name'"):
            parse_market_name(name)


@pytest.mark.parametrize("name", [n for names in FILES.values() for n in names])
def test_parse_name_matches_reference(name):
    assert parse_market_name(name) == _reference_parse(name)


def test_minus_one_shifts_the_camera_digit():
    # Slicing fixed positions would read camera '_' / '3' wrongly for the junk name.
    assert parse_market_name("-1_c3s2_012345_01.jpg") == (-1, 2)
    assert parse_market_name("0003_c3s2_012345_01.jpg") == (3, 2)


@pytest.mark.parametrize(
    "name",
    [
        "0002_c7s1_000451_03.jpg",
        "0002_c0s1_000451_03.jpg",
        "abcd_c1s1_000451_03.jpg",
        "0002_c1_000451.jpg",
        "-2_c1s1_000451_03.jpg",
    ],
)
def test_bad_names(name):
    with pytest.raises(DatasetFormatError, match="field 'name'"):
        parse_market_name(name)


def test_bad_name_in_folder_names_the_file(tmp_path):
    root = _make(tmp_path)
    bad = root / "query" / "0002-c1s1-000451.jpg"
    bad.write_bytes(b"x")
    with pytest.raises(DatasetFormatError) as error:
        load_market1501(root)
    assert str(bad) in str(error.value)


def test_missing_folder(tmp_path):
    root = _make(tmp_path)
    os.rename(root / "query", root / "queries")
    with pytest.raises(DatasetFormatError, match="missing directory") as error:
        load_market1501(root)
    assert os.path.join(str(root), "query") in str(error.value)
