"""Tests for the CUHK-PEDES `reid_raw.json` reader."""

from __future__ import annotations

import os

import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
from reid_jax.data.records import CaptionedImage

from .conftest import assert_names, truncate, write_jpeg, write_json


def _entry(pid, file_path, captions, split, tokens=None):
    if tokens is None:
        tokens = [c.lower().rstrip(".").split() for c in captions]
    return {
        "split": split,
        "captions": captions,
        "file_path": file_path,
        "processed_tokens": tokens,
        "id": pid,
    }


def _entries():
    return [
        _entry(1, "CUHK01/0001001.png", ["A man in a red coat.", "He wears black shoes."], "train"),
        _entry(1, "CUHK01/0001002.png", ["The man walks.", "Red coat.", "Jeans."], "train"),
        _entry(13003, "Market/0002_c1s1_000451_03.jpg", ["A woman.", "Long hair."], "Test"),
        _entry(12000, "cam_a/001_45.bmp", ["Walking girl.", "White shirt."], "val"),
    ]


def _make(root, entries):
    for i, entry in enumerate(entries):
        write_jpeg(os.path.join(root, "imgs", entry["file_path"]), seed=i)
    return write_json(os.path.join(root, "reid_raw.json"), entries)


def _expected(root, entries):
    out = []
    for e in entries:
        split = e["split"].lower()
        out.append(
            CaptionedImage(
                image_path=os.path.join(os.path.abspath(root), "imgs", e["file_path"]),
                person_id=e["id"],
                captions=tuple(e["captions"]),
                tokens=tuple(tuple(t) for t in e["processed_tokens"]),
                split=split if split in ("train", "test") else "val",
            )
        )
    return out


def test_reads_all_fields_keeps_one_based_ids(tmp_path, warnings_log):
    entries = _entries()
    _make(tmp_path, entries)
    records = load_cuhk_pedes(tmp_path)
    assert records == _expected(tmp_path, entries)
    assert [r.person_id for r in records] == [1, 1, 13003, 12000]  # 1-based, not shifted
    # The 3-caption image is a real-data quirk: kept whole, logged with its count.
    assert "1 images with a caption count other than 2" in warnings_log.text


def test_unknown_split_value_is_an_error_not_a_warning(tmp_path):
    entries = _entries()
    entries[3]["split"] = "Dev"
    json_path = _make(tmp_path, entries)
    with pytest.raises(DatasetFormatError, match="unknown split value 'Dev'") as error:
        load_cuhk_pedes(tmp_path)
    assert_names(error, json_path, 3, "split")
    entries[3]["split"] = " VAL "  # case and padding are still normalised
    write_json(json_path, entries)
    assert load_cuhk_pedes(tmp_path)[3].split == "val"


def test_empty_token_lists_drop_the_caption_or_the_record(tmp_path, warnings_log):
    entries = _entries()
    entries[0]["processed_tokens"][1] = []
    entries[3]["processed_tokens"] = [[], []]
    _make(tmp_path, entries)
    records = load_cuhk_pedes(tmp_path)
    assert len(records) == 3
    assert records[0].captions == (entries[0]["captions"][0],)
    assert records[0].tokens == (tuple(entries[0]["processed_tokens"][0]),)
    assert "3 captions with an empty token list dropped" in warnings_log.text
    assert "1 records skipped: no caption with tokens left" in warnings_log.text


@pytest.mark.parametrize(
    "mutate, record, field",
    [
        (lambda e: e[2].pop("captions"), 2, "captions"),
        (lambda e: e[1].update(id="7"), 1, "id"),
        (lambda e: e[1].update(id=True), 1, "id"),
        (lambda e: e[0].update(captions=["ok", "  "]), 0, "captions[1]"),
        (lambda e: e[0].update(captions="one string"), 0, "captions"),
        (lambda e: e[3].update(processed_tokens=[["a"]]), 3, "processed_tokens"),
        (lambda e: e[3].update(processed_tokens=[["a"], "b c"]), 3, "processed_tokens[1]"),
        (lambda e: e[2].update(split=3), 2, "split"),
        (lambda e: e[2].update(file_path=""), 2, "file_path"),
        (lambda e: e.__setitem__(1, ["not", "an", "object"]), 1, None),
        (lambda e: e[1].update(file_path="/etc/passwd"), 1, "file_path"),
        (lambda e: e[1].update(file_path="CUHK01/../../reid_raw.json"), 1, "file_path"),
        (lambda e: e[1].update(id=2**63), 1, "id"),
    ],
)
def test_bad_records_name_file_record_and_field(tmp_path, mutate, record, field):
    entries = _entries()
    _make(tmp_path, entries)
    mutate(entries)
    json_path = write_json(tmp_path / "reid_raw.json", entries)
    with pytest.raises(DatasetFormatError) as error:
        load_cuhk_pedes(tmp_path)
    assert_names(error, json_path, record, field)


def test_truncated_json_and_wrong_top_level(tmp_path):
    json_path = _make(tmp_path, _entries())
    truncate(json_path)
    with pytest.raises(DatasetFormatError, match="invalid or truncated JSON") as error:
        load_cuhk_pedes(tmp_path)
    assert_names(error, json_path)
    write_json(json_path, {"images": _entries()})
    with pytest.raises(DatasetFormatError, match="top level must be a JSON list"):
        load_cuhk_pedes(tmp_path)
    os.remove(json_path)
    with pytest.raises(DatasetFormatError, match="cannot read file"):
        load_cuhk_pedes(tmp_path)


def test_missing_image_is_reported_unless_checks_are_off(tmp_path):
    entries = _entries()
    json_path = _make(tmp_path, entries)
    missing = os.path.join(tmp_path, "imgs", entries[2]["file_path"])
    os.remove(missing)
    with pytest.raises(DatasetFormatError) as error:
        load_cuhk_pedes(tmp_path)
    assert_names(error, json_path, 2, "file_path")
    assert missing in str(error.value)
    assert len(load_cuhk_pedes(tmp_path, check_images=False)) == 4
