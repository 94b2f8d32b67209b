"""Fuzzed MATLAB readers: CUHK03 protocol, PA-100K, PETA, Market/Duke attribute files.

Each case takes the real-format content the reader's own test module builds, replaces one
variable or struct field with an array of another shape or dtype (numbers, bools, complex,
strings, cells, structs, empty), changes one element to a bad value (NaN, inf, 0.5, -1, 2,
1e300), deletes it, or breaks the file bytes. The reader must either return records that keep
the format's invariants (and equal the unmutated result when nothing was changed) or raise a
DatasetFormatError naming the file and, for content errors, the field.

Bytes spliced into the middle of a v5 file have crashed scipy.io.loadmat's compiled reader
with a segmentation fault; `_mat.load_mat` therefore reads in a helper process and turns the
crash into a DatasetFormatError (tested directly below with a reader that crashes).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.io
from hypothesis import assume, given
from hypothesis import strategies as st

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _mat
from reid_jax.data.formats.attributes import load_duke_attributes, load_market_attributes
from reid_jax.data.formats.cuhk03 import load_cuhk03
from reid_jax.data.formats.pa100k import load_pa100k
from reid_jax.data.formats.peta import load_peta

from . import fuzzing, test_attributes, test_cuhk03, test_pa100k, test_peta


@dataclasses.dataclass(frozen=True, repr=False)
class MatReader:
    """A .mat reader under fuzzing: base content, file name, loader and record invariants."""

    name: str
    content: Callable[[], dict]
    file_name: str
    load: Callable[[str], Any]
    invariant: Callable[[Any], None]

    def __repr__(self) -> str:
        return f"MatReader({self.name})"


def _attribute_content(struct, fields, keys, rng):
    splits = {
        split: test_attributes._split_struct(
            ks, test_attributes._random_values(rng, fields, len(ks)), ["image_index", *fields]
        )
        for split, ks in keys.items()
    }
    return {struct: splits}


def _camera_invariant(records):
    assert all(r.camera_id in (0, 1) and r.split in ("train", "query", "gallery") for r in records)


def _binary_invariant(width):
    def check(records):
        records = getattr(records, "records", records)
        assert all(len(r.labels) == width and set(r.labels) <= {0, 1} for r in records)

    return check


def _attribute_invariant(maximum):
    def check(records):
        assert all(min(r.labels) >= -1 and max(r.labels) <= maximum for r in records)
        assert all(r.split in ("train", "test") and r.key.strip() for r in records)

    return check


READERS = [
    MatReader(
        "cuhk03",
        lambda: test_cuhk03._protocol(test_cuhk03._images()),
        "cuhk03_new_protocol_config_detected.mat",
        lambda path: load_cuhk03(os.path.dirname(path), check_images=False),
        _camera_invariant,
    ),
    MatReader(
        "pa100k.mat",
        lambda: test_pa100k._content(np.random.default_rng(0)),
        "annotation.mat",
        lambda path: load_pa100k(path, check_images=False),
        _binary_invariant(26),
    ),
    MatReader(
        "peta",
        lambda: test_peta._content(np.random.default_rng(0))[0],
        "PETA.mat",
        lambda path: load_peta(path, check_images=False),
        _binary_invariant(test_peta.NUM_ATTRIBUTES),
    ),
    MatReader(
        "attributes.market",
        lambda: _attribute_content(
            "market_attribute",
            test_attributes.MARKET_FIELDS,
            {"train": ["0002", "0007", "0010"], "test": ["0001", "0003"]},
            np.random.default_rng(1),
        ),
        "market_attribute.mat",
        load_market_attributes,
        _attribute_invariant(3),
    ),
    MatReader(
        "attributes.duke",
        lambda: _attribute_content(
            "duke_attribute",
            test_attributes.DUKE_FIELDS,
            {"train": ["0001", "0370"], "test": ["0002", "7140"]},
            np.random.default_rng(2),
        ),
        "duke_attribute.mat",
        load_duke_attributes,
        _attribute_invariant(1),
    ),
]


def _leaves(content: dict, prefix=()) -> list[tuple]:
    """Key paths of every variable / struct field (struct arrays inside cells are leaves)."""
    out = []
    for key, value in content.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _leaves(value, (*prefix, key))
    return out


BAD_NUMBERS = [0, 1, 2, -1, 0.5, np.nan, np.inf, 1e300, 2.0**63, 7]
ARRAYS = st.one_of(
    st.builds(
        lambda dtype, shape, fill: np.full(shape, fill).astype(dtype),
        st.sampled_from([np.float64, np.int32, np.uint8, np.bool_, np.complex128]),
        st.lists(st.integers(0, 3), max_size=3).map(tuple),
        st.sampled_from([0, 1, 2, -1, 0.5, 7]),
    ),
    st.lists(fuzzing.TEXTS.filter(lambda t: len(t) < 100), min_size=1, max_size=3).map(
        lambda texts: np.array(texts, dtype=object).reshape(-1, 1)
    ),
    st.sampled_from(
        [
            np.array(["a", "bb"]),
            np.zeros((0, 0)),
            {"field": np.ones(2)},
            np.array([{"x": 1.0}], dtype=object),
            "a string",
        ]
    ),
)


def _mutate(data: st.DataObject, content: dict) -> tuple[dict, bool]:
    """Returns (mutated copy, whether anything changed)."""
    content = copy.deepcopy(content)
    kind = data.draw(st.sampled_from(["keep", "replace", "replace", "element", "delete"]))
    if kind == "keep":
        return content, False
    *parents, key = data.draw(st.sampled_from(_leaves(content)), label="field")
    holder = content
    for parent in parents:
        holder = holder[parent]
    if kind == "delete":
        del holder[key]
    elif kind == "element" and isinstance(holder[key], np.ndarray) and holder[key].size:
        array = holder[key].astype(np.float64) if holder[key].dtype.kind in "biuf" else holder[key]
        index = data.draw(st.integers(0, array.size - 1), label="index")
        if array.dtype == object:
            array.flat[index] = data.draw(ARRAYS, label="element")
        else:
            array.flat[index] = data.draw(st.sampled_from(BAD_NUMBERS), label="number")
        holder[key] = array
    else:
        holder[key] = data.draw(ARRAYS, label="value")
    return content, True


@pytest.fixture(scope="module", params=READERS, ids=lambda r: r.name)
def mat_fixture(request, tmp_path_factory):
    reader = request.param
    path = str(tmp_path_factory.mktemp(reader.name) / reader.file_name)
    content = reader.content()
    scipy.io.savemat(path, content)
    return reader, path, content, reader.load(path)


@fuzzing.FUZZ_SETTINGS
@given(data=st.data())
def test_mat_reader_keeps_invariants_or_names_file_and_field(mat_fixture, data):
    reader, path, content, original = mat_fixture
    mutated, changed = _mutate(data, content)
    try:
        scipy.io.savemat(path, mutated)
    except Exception:  # a value scipy cannot write is not a file anyone has
        assume(False)
    with open(path, "rb") as f:
        raw = f.read()
    # "insert" (bytes spliced into the file) has crashed scipy.io.loadmat's C reader with a
    # segmentation fault; the helper process turns that into a DatasetFormatError.
    broken = data.draw(
        fuzzing.file_bytes(raw, ("truncate", "insert", "garbage", "empty")), label="file"
    )
    fuzzing.write_bytes(path, broken)

    outcome = fuzzing.run_reader(reader.name, lambda: reader.load(path))

    if isinstance(outcome, Exception):
        if broken == raw:  # content errors name the field
            fuzzing.check_error(outcome, path=path)
            assert outcome.field is not None, outcome
        else:
            fuzzing.check_error(outcome, path=path)
        return
    reader.invariant(outcome)
    if not changed and broken == raw:
        assert (
            outcome == original
            if not hasattr(outcome, "partitions")
            else outcome.records == (original.records)
        )


def _crashing_loadmat(path):
    """Stands in for scipy's reader in the helper process and dies like its segfault."""
    del path
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_crash_of_the_mat_reader_is_a_dataset_error_and_the_next_read_works(
    tmp_path, monkeypatch
):
    path = tmp_path / "attributes.mat"
    scipy.io.savemat(path, {"x": np.arange(3.0)})
    monkeypatch.setattr(_mat, "_loadmat", _crashing_loadmat)
    with pytest.raises(DatasetFormatError, match="crashed") as error:
        _mat.load_mat(path)
    assert error.value.path == str(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(_mat.load_mat(path)["x"], [[0.0, 1.0, 2.0]])
