"""Fuzzed JSON readers: CUHK-PEDES, ICFG-PEDES, RSTPReid, APTM train/test, MALS, PA-100K json.

Every case starts from the fixture the reader's own test module writes (two of its images are
then made undecodable: readers only stat images), mutates 1-2 records (a field removed,
retyped to any JSON value, or set to a targeted bad value: non-ASCII, empty or huge text,
numbers past int64, numeric-looking strings, absolute or escaping paths), sometimes breaks the
file bytes (truncated, spliced, garbage, deeply nested) and checks the outcome against a
reference decoding (see `fuzzing.py`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reid_jax.data.formats.aptm_json import load_aptm_test, load_aptm_train
from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
from reid_jax.data.formats.icfg_pedes import load_icfg_pedes
from reid_jax.data.formats.mals import load_mals
from reid_jax.data.formats.pa100k import PA100K_ATTRIBUTE_NAMES, load_pa100k_json
from reid_jax.data.formats.rstpreid import load_rstpreid
from reid_jax.data.records import AttributeRecord, CaptionedImage, CaptionPair

from . import (
    fuzzing,
    test_aptm_json,
    test_cuhk_pedes,
    test_icfg_pedes,
    test_mals,
    test_pa100k,
    test_rstpreid,
)
from .conftest import write_jpeg, write_json
from .fuzzing import MISSING, is_int64, is_safe_existing_path, is_text


@dataclasses.dataclass(frozen=True, repr=False)
class Dialect:
    """One JSON reader under fuzzing.

    Attributes:
      name: reader name in the case counts.
      make: root -> (json path, image folder, base entries); writes the real-format fixture.
      load: (json path, image folder) -> records.
      problems: (entry, image folder) -> the fields the format rejects ({None}: not an object).
      record: (entry, image folder) -> the record the reader must return, or None (skipped).
      values: field -> targeted values for it.
    """

    name: str
    make: Callable[[str], tuple[str, str, list]]
    load: Callable[[str, str], list]
    problems: Callable[[Any, str], set]
    record: Callable[[Any, str], Any]
    values: dict[str, st.SearchStrategy]

    def __repr__(self) -> str:  # hypothesis prints the fixture of a failing case
        return f"Dialect({self.name})"


# --- field oracles ---------------------------------------------------------------------------


def _captions_ok(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(is_text(c) for c in value)


def _tokens_ok(value: Any, captions: Any) -> bool:
    return (
        isinstance(value, list)
        and (not _captions_ok(captions) or len(value) == len(captions))
        and all(isinstance(t, list) and all(isinstance(w, str) for w in t) for t in value)
    )


def _labels_ok(value: Any, length: int, allowed: set[int]) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(type(v) is int and v in allowed for v in value)
    )


def _decimal_id(value: Any) -> int | None:
    """An int64 id stored as an int or an ASCII decimal string (APTM test files), else None."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip(fuzzing.ASCII_SPACE)):
        value = int(value)
    return value if is_int64(value) else None


def _problems(entry: Any, checks: dict[str, Callable[[Any], bool]]) -> set:
    if not isinstance(entry, dict):
        return {None}
    return {field for field, ok in checks.items() if not ok(entry.get(field, MISSING))}


# --- the caption-list dialects (CUHK-PEDES, ICFG-PEDES, RSTPReid) ----------------------------


def _caption_dialect(name, module, load, json_name, path_field, splits, tokens) -> Dialect:
    def make(root):
        entries = module._entries()
        module._make(root, entries)
        return os.path.join(root, json_name), os.path.join(root, "imgs"), entries

    def problems(entry, image_dir):
        checks = {
            "id": lambda v: is_int64(v, 0),
            path_field: lambda v: is_safe_existing_path(v, image_dir),
            "captions": _captions_ok,
            "split": lambda v: isinstance(v, str) and v.strip().lower() in splits,
        }
        if tokens:
            captions = entry.get("captions") if isinstance(entry, dict) else None
            checks["processed_tokens"] = lambda v: _tokens_ok(v, captions)
            problems = _problems(entry, checks)
            if problems <= {path_field} and not any(entry["processed_tokens"]):
                # A record left without tokenised captions is skipped before its image is
                # looked up (nothing is opened), so only the path's type is checked.
                return set() if is_text(entry[path_field]) else {path_field}
            return problems
        return _problems(entry, checks)

    def record(entry, image_dir):
        captions, kept_tokens = tuple(entry["captions"]), None
        if tokens:  # captions whose token list is empty are dropped (a logged quirk)
            kept = [
                (c, tuple(t)) for c, t in zip(captions, entry["processed_tokens"], strict=True) if t
            ]
            if not kept:
                return None
            captions, kept_tokens = tuple(c for c, _ in kept), tuple(t for _, t in kept)
        return CaptionedImage(
            image_path=os.path.join(image_dir, entry[path_field]),
            person_id=entry["id"],
            captions=captions,
            tokens=kept_tokens,
            split=entry["split"].strip().lower(),
        )

    split_values = st.sampled_from(
        ["train", "TRAIN", " test ", "val", "dev", "", "validation", "trаin", "テスト"]
    )
    values = {
        "id": fuzzing.INTEGERS | fuzzing.NUMERIC_STRINGS,
        "captions": st.lists(fuzzing.TEXTS, max_size=3),
        "split": split_values | fuzzing.TEXTS,
        "processed_tokens": st.lists(st.lists(fuzzing.TEXTS, max_size=3), max_size=3),
    }
    return Dialect(
        name,
        make,
        lambda json_path, root: load(os.path.dirname(json_path)),
        problems,
        record,
        values,
    )


# --- the pair / attribute dialects -----------------------------------------------------------


def _make_aptm(root, name, entries):
    return test_aptm_json._make(root, name, entries), os.path.join(root, "imgs"), entries


def _make_mals(root):
    entries = test_mals._file_entries("c_g_a_0", 3, np.random.default_rng(0))
    for i, entry in enumerate(entries):
        write_jpeg(os.path.join(root, "images", entry["image"]), seed=i)
    return (
        write_json(os.path.join(root, "c_g_a_0.json"), entries),
        os.path.join(root, "images"),
        entries,
    )


def _make_pa100k(root):
    content = test_pa100k._content(np.random.default_rng(0))
    names = content["val_images_name"].ravel()
    entries = [
        {"image": f"release_data/release_data/{name}", "label": labels.tolist()}
        for name, labels in zip(names, content["val_label"], strict=True)
    ]
    for i, entry in enumerate(entries):
        write_jpeg(os.path.join(root, entry["image"]), seed=i)
    return write_json(os.path.join(root, "PA100K_val.json"), entries), root, entries


def _label_values(length: int, values: list) -> st.SearchStrategy:
    return st.lists(st.sampled_from(values), min_size=length - 1, max_size=length + 1)


DIALECTS = [
    _caption_dialect(
        "cuhk_pedes",
        test_cuhk_pedes,
        load_cuhk_pedes,
        "reid_raw.json",
        "file_path",
        ("train", "val", "test"),
        tokens=True,
    ),
    _caption_dialect(
        "icfg_pedes",
        test_icfg_pedes,
        load_icfg_pedes,
        "ICFG-PEDES.json",
        "file_path",
        ("train", "test"),
        tokens=True,
    ),
    _caption_dialect(
        "rstpreid",
        test_rstpreid,
        load_rstpreid,
        "data_captions.json",
        "img_path",
        ("train", "val", "test"),
        tokens=False,
    ),
    Dialect(
        "aptm_json.train",
        lambda root: _make_aptm(root, "cuhk_train.json", test_aptm_json._train_entries()),
        load_aptm_train,
        lambda e, d: _problems(
            e,
            {
                "image": lambda v: is_safe_existing_path(v, d),
                "caption": is_text,
                "image_id": lambda v: type(v) is int or is_text(v),
            },
        ),
        lambda e, d: CaptionPair(
            os.path.join(d, e["image"]), e["caption"], str(e["image_id"]), None
        ),
        {"caption": fuzzing.TEXTS, "image_id": fuzzing.INTEGERS | fuzzing.NUMERIC_STRINGS},
    ),
    Dialect(
        "aptm_json.test",
        lambda root: _make_aptm(root, "cuhk_test.json", test_aptm_json._test_entries()),
        load_aptm_test,
        lambda e, d: _problems(
            e,
            {
                "image": lambda v: is_safe_existing_path(v, d),
                "caption": _captions_ok,
                "image_id": lambda v: _decimal_id(v) is not None,
            },
        ),
        lambda e, d: CaptionedImage(
            os.path.join(d, e["image"]),
            _decimal_id(e["image_id"]),
            tuple(e["caption"]),
            None,
            "test",
        ),
        {
            "caption": st.lists(fuzzing.TEXTS, max_size=3),
            "image_id": fuzzing.INTEGERS | fuzzing.NUMERIC_STRINGS,
        },
    ),
    Dialect(
        "mals",
        _make_mals,
        lambda json_path, image_dir: load_mals([json_path], image_dir),
        lambda e, d: _problems(
            e,
            {
                "image": lambda v: is_safe_existing_path(v, d),
                "caption": is_text,
                "image_id": lambda v: type(v) is int or is_text(v),
                "label": lambda v: _labels_ok(v, 27, {-1, 0, 1}),
            },
        ),
        lambda e, d: CaptionPair(
            os.path.join(d, e["image"]), e["caption"], str(e["image_id"]), tuple(e["label"])
        ),
        {
            "caption": fuzzing.TEXTS,
            "image_id": fuzzing.INTEGERS | fuzzing.NUMERIC_STRINGS,
            "label": _label_values(27, [-1, 0, 1, 2, True, 1.0, "1", None]),
        },
    ),
    Dialect(
        "pa100k.json",
        _make_pa100k,
        lambda json_path, root: load_pa100k_json(json_path, root, "val"),
        lambda e, d: _problems(
            e,
            {
                "image": lambda v: is_safe_existing_path(v, d),
                "label": lambda v: _labels_ok(v, 26, {0, 1}),
            },
        ),
        lambda e, d: AttributeRecord(
            os.path.join(d, e["image"]), tuple(e["label"]), PA100K_ATTRIBUTE_NAMES, "val"
        ),
        {"label": _label_values(26, [0, 1, -1, 2, False, 0.0, "0"])},
    ),
]
_PATH_FIELDS = ("file_path", "img_path", "image")


class Fixture(tuple):
    """(dialect, json path, image folder, base entries), printed briefly in failure reports."""

    def __repr__(self) -> str:
        return f"Fixture({self[0].name}, {self[1]})"


@pytest.fixture(scope="module", params=DIALECTS, ids=lambda d: d.name)
def fixture(request, tmp_path_factory):
    """The dialect's fixture: Fixture(dialect, json path, image folder, base entries)."""
    dialect = request.param
    root = str(tmp_path_factory.mktemp(dialect.name))
    json_path, image_dir, entries = dialect.make(root)
    image_dir = os.path.abspath(image_dir)
    # Readers never decode images: a truncated JPEG and a non-image file are still records.
    paths = [e[f] for e in entries for f in _PATH_FIELDS if f in e]
    with open(os.path.join(image_dir, paths[0]), "r+b") as f:
        f.truncate(10)
    with open(os.path.join(image_dir, paths[-1]), "wb") as f:
        f.write(b"this is not an image")
    write_jpeg(os.path.join(os.path.dirname(image_dir), fuzzing.OUTSIDE_FILE))
    return Fixture((dialect, json_path, image_dir, entries))


def _mutate(
    data: st.DataObject, dialect: Dialect, entries: list, paths: list[str], image_dir: str
) -> list:
    """Applies 1-2 record mutations to a copy of `entries`."""
    entries = copy.deepcopy(entries)
    fields = sorted(set(entries[0]) | {"extra"})
    path_values = fuzzing.dangerous_paths(paths, image_dir)
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        i = data.draw(st.integers(0, len(entries) - 1), label="record")
        kinds = ["drop", "retype", "target", "target", "target", "replace", "duplicate"]
        kind = data.draw(st.sampled_from(kinds), label="mutation")
        if kind == "replace":
            entries[i] = data.draw(fuzzing.JSON_VALUES, label="record value")
        elif kind == "duplicate":
            entries.insert(i, copy.deepcopy(entries[i]))
        elif isinstance(entries[i], dict):
            field = data.draw(st.sampled_from(fields), label="field")
            if kind == "drop":
                entries[i].pop(field, None)
            elif kind == "retype" or field == "extra":
                entries[i][field] = data.draw(fuzzing.JSON_VALUES, label="value")
            else:
                values = path_values if field in _PATH_FIELDS else dialect.values[field]
                entries[i][field] = data.draw(values, label="value")
    return entries


@fuzzing.FUZZ_SETTINGS
@given(data=st.data())
def test_reader_returns_correct_records_or_names_file_record_and_field(fixture, data):
    dialect, json_path, image_dir, entries = fixture
    paths = [e[f] for e in entries for f in _PATH_FIELDS if f in e]
    mutated = _mutate(data, dialect, entries, paths, image_dir)
    raw = data.draw(fuzzing.file_bytes(json.dumps(mutated).encode()), label="file")
    fuzzing.write_bytes(json_path, raw)

    outcome = fuzzing.run_reader(dialect.name, lambda: dialect.load(json_path, image_dir))

    value = fuzzing.decode_json(raw)
    if not isinstance(value, list):
        fuzzing.check_error(outcome, path=json_path, record=None, fields={None})
        return
    for index, entry in enumerate(value):
        problems = dialect.problems(entry, image_dir)
        if problems:  # the first bad record stops the reader
            fuzzing.check_error(outcome, path=json_path, record=index, fields=problems)
            return
    expected = [dialect.record(entry, image_dir) for entry in value]
    assert outcome == [r for r in expected if r is not None]
