"""Tests for the MSMT17 list-file reader."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.msmt17 import load_msmt17

LISTS = {
    "list_train.txt": (
        "train",
        [
            ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
            ("1040/1040_011_15_0113afternoon_0841_1.jpg", 1040),
        ],
    ),
    "list_val.txt": ("train", [("0000/0000_003_07_0303noon_0100_0.jpg", 0)]),
    "list_query.txt": ("test", [("0000/0000_000_10_0302noon_0008_0.jpg", 0)]),
    "list_gallery.txt": (
        "test",
        [
            ("0000/0000_001_02_0302noon_0010_2.jpg", 0),
            ("3059/3059_020_12_0113morning_1234_0.jpg", 3059),
        ],
    ),
}


def _make(root, train_dir="train", test_dir="test"):
    dirs = {"train": train_dir, "test": test_dir}
    for list_name, (kind, lines) in LISTS.items():
        for rel, _ in lines:
            path = root / dirs[kind] / rel
            os.makedirs(path.parent, exist_ok=True)
            path.write_bytes(b"jpeg")
        text = "".join(f"{rel} {label}\n" for rel, label in lines)
        (root / list_name).write_text(text + "\n")  # trailing blank line is ignored
    return root


def _expected(root, dirs, include_val=True):
    out = []
    for list_name, split in (
        ("list_train.txt", "train"),
        ("list_val.txt", "train"),
        ("list_query.txt", "query"),
        ("list_gallery.txt", "gallery"),
    ):
        if list_name == "list_val.txt" and not include_val:
            continue
        kind, lines = LISTS[list_name]
        for rel, label in lines:
            camera = int(os.path.basename(rel).split("_")[2]) - 1
            out.append((os.path.join(os.path.abspath(root), dirs[kind], rel), label, camera, split))
    return out


@pytest.mark.parametrize(
    "train_dir, test_dir", [("train", "test"), ("mask_train_v2", "mask_test_v2")]
)
def test_reads_v1_and_v2_layouts(tmp_path, train_dir, test_dir):
    root = _make(tmp_path, train_dir, test_dir)
    dirs = {"train": train_dir, "test": test_dir}
    got = [(r.image_path, r.person_id, r.camera_id, r.split) for r in load_msmt17(root)]
    assert got == _expected(root, dirs)
    no_val = load_msmt17(root, include_val=False)
    assert [(r.image_path, r.person_id, r.camera_id, r.split) for r in no_val] == _expected(
        root, dirs, include_val=False
    )


@pytest.mark.parametrize(
    "line, field, match",
    [
        ("0000/0000_000_01_0303morning_0015_0.jpg", "line", "expected '<path> <label>'"),
        ("0000/0000_000_01_0303morning_0015_0.jpg x", "label", "not a non-negative integer"),
        ("0000/0000_000_16_0303morning_0015_0.jpg 0", "path", "camera CC in 01..15"),
        ("0000/0000_000_00_0303morning_0015_0.jpg 0", "path", "camera CC in 01..15"),
        ("0000/0000_000_01_0303morning_0099_0.jpg 0", "path", "image file not found"),
        ("0000/0000_000_01_0303morning_0015_0.jpg 7", "label", "disagrees with the identity 0"),
        ("0000/0000_000_01_0303morning_0015_0.jpg ²", "label", "not a non-negative integer"),
        ("0000/0000_000_١_0303morning_0015_0.jpg 0", "path", "camera CC in 01..15"),
        ("/abs/0000/0000_000_01_0303morning_0015_0.jpg 0", "path", "is absolute"),
        ("../test/0000/0000_000_01_0303morning_0015_0.jpg 0", "path", "'..' component"),
        ("0000/0000_000_01_0303morning_0015_0.jpg 0 extra", "line", "expected '<path> <label>'"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, field, match):
    root = _make(tmp_path)
    with open(root / "list_query.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DatasetFormatError, match=match) as error:
        load_msmt17(root)
    message = str(error.value)
    assert str(root / "list_query.txt") in message and "record line 3" in message
    if field:
        assert f"field '{field}'" in message


def test_missing_list_or_folder(tmp_path):
    root = _make(tmp_path)
    os.remove(root / "list_gallery.txt")
    with pytest.raises(DatasetFormatError, match="cannot read list file"):
        load_msmt17(root)
    os.rename(root / "test", root / "tst")
    with pytest.raises(DatasetFormatError, match="missing image folder"):
        load_msmt17(root)
