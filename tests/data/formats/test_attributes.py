"""Tests for the Market-1501 / DukeMTMC-reID attribute .mat readers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.attributes import (
    DUKE_ATTRIBUTE_NAMES,
    MARKET_ATTRIBUTE_NAMES,
    load_duke_attributes,
    load_market_attributes,
)

from .conftest import truncate

MARKET_FIELDS = (  # the 27 fields of the real file, spelled as in alignedreid §1.4
    "gender hair up down clothes hat backpack bag handbag age upblack upwhite upred uppurple "
    "upyellow upgray upblue upgreen downblack downwhite downpink downpurple downyellow downgray "
    "downblue downgreen downbrown"
).split()
DUKE_FIELDS = (
    "gender top boots hat backpack bag handbag shoes upblack upwhite upred uppurple upgray upblue "
    "upgreen upbrown downblack downwhite downred downgray downblue downgreen downbrown"
).split()


def _split_struct(keys, values, order):
    """A split sub-struct: fields in `order` (dict order = MATLAB field order), 1 x n rows."""
    struct = {}
    for name in order:
        struct[name] = (
            np.array(keys, dtype=object)
            if name == "image_index"
            else np.asarray(values[name], dtype=np.float64)
        )
    return struct


def _random_values(rng, fields, n):
    return {f: rng.integers(1, 5 if f == "age" else 3, n) for f in fields}


def _write(path, struct_name, fields, splits, rng):
    """splits: {split: (keys, values)}; train keeps file order, test gets a shuffled order."""
    content = {}
    for split, (keys, values) in splits.items():
        order = ["image_index", *fields]
        if split == "test":
            order = list(rng.permutation(order))
        content[split] = _split_struct(keys, values, order)
    scipy.io.savemat(path, {struct_name: content})
    return str(path)


@pytest.fixture
def market(tmp_path):
    rng = np.random.default_rng(1)
    splits = {
        "train": (["0002", "0007", "0010"], _random_values(rng, MARKET_FIELDS, 3)),
        "test": (["0001", "0003"], _random_values(rng, MARKET_FIELDS, 2)),
    }
    path = _write(tmp_path / "market_attribute.mat", "market_attribute", MARKET_FIELDS, splits, rng)
    return path, splits


def test_canonical_names():
    assert MARKET_ATTRIBUTE_NAMES == tuple(MARKET_FIELDS) and len(MARKET_ATTRIBUTE_NAMES) == 27
    assert DUKE_ATTRIBUTE_NAMES == tuple(DUKE_FIELDS) and len(DUKE_ATTRIBUTE_NAMES) == 23


def test_market_fixed_order_and_coding(market):
    path, splits = market
    fields = scipy.io.loadmat(path)["market_attribute"][0, 0]
    assert fields["train"].dtype.names != fields["test"].dtype.names  # orders really differ
    records = load_market_attributes(path)
    expected = []
    for split, (keys, values) in splits.items():
        for i, key in enumerate(keys):
            # 1/2 -> 0/1 and age 1..4 -> 0..3, both equal to value - 1.
            labels = tuple(int(values[name][i]) - 1 for name in MARKET_FIELDS)
            expected.append((key, labels, split))
    assert [(r.key, r.labels, r.split) for r in records] == expected
    assert all(r.names == MARKET_ATTRIBUTE_NAMES for r in records)
    age = MARKET_ATTRIBUTE_NAMES.index("age")
    assert {r.labels[age] for r in records} <= {0, 1, 2, 3}


def test_market_rejects_out_of_range_values(tmp_path, market):
    path, splits = market
    rng = np.random.default_rng(2)
    splits["test"][1]["downpink"][1] = 0  # 0 is only a known quirk in the Duke file
    _write(path, "market_attribute", MARKET_FIELDS, splits, rng)
    with pytest.raises(DatasetFormatError, match="value 0 outside 1..2") as error:
        load_market_attributes(path)
    message = str(error.value)
    assert path in message and "market_attribute.test identity 0003" in message
    assert "field 'downpink'" in message
    splits["test"][1]["downpink"][1] = 1
    splits["train"][1]["age"][0] = 5
    _write(path, "market_attribute", MARKET_FIELDS, splits, rng)
    with pytest.raises(DatasetFormatError, match="value 5 outside 1..4"):
        load_market_attributes(path)


def test_market_missing_field_wrong_length_and_bad_file(tmp_path, market):
    path, splits = market
    rng = np.random.default_rng(3)
    del splits["train"][1]["handbag"]
    _write(path, "market_attribute", [f for f in MARKET_FIELDS if f != "handbag"], splits, rng)
    with pytest.raises(DatasetFormatError, match="missing struct field") as error:
        load_market_attributes(path)
    assert "record market_attribute.train" in str(error.value)
    assert "field 'handbag'" in str(error.value)
    splits["train"][1]["handbag"] = np.ones(2)
    _write(path, "market_attribute", MARKET_FIELDS, splits, rng)
    with pytest.raises(DatasetFormatError, match="expected 3 values, got 2"):
        load_market_attributes(path)
    splits["train"][1]["handbag"] = np.ones(3)
    _write(path, "market_attribute", MARKET_FIELDS, splits, rng)
    assert len(load_market_attributes(path)) == 5
    truncate(path, 0.5)
    with pytest.raises(DatasetFormatError, match="malformed or truncated") as error:
        load_market_attributes(path)
    assert path in str(error.value)
    scipy.io.savemat(path, {"duke_attribute": {"train": {}, "test": {}}})
    with pytest.raises(DatasetFormatError, match="field 'market_attribute'"):
        load_market_attributes(path)


def test_duke_top_zero_maps_to_unknown_with_counted_warning(tmp_path, warnings_log):
    rng = np.random.default_rng(4)
    train_keys = ["0001", "0370", "0679", "0700"]
    splits = {
        "train": (train_keys, _random_values(rng, DUKE_FIELDS, 4)),
        "test": (["0002", "7140"], _random_values(rng, DUKE_FIELDS, 2)),
    }
    splits["train"][1]["top"][[1, 2]] = 0  # the real file's invalid entries (ids 0370, 0679)
    path = _write(tmp_path / "duke_attribute.mat", "duke_attribute", DUKE_FIELDS, splits, rng)
    records = load_duke_attributes(path)
    top = DUKE_ATTRIBUTE_NAMES.index("top")
    for split, (keys, values) in splits.items():
        got = [r for r in records if r.split == split]
        assert [r.key for r in got] == keys
        for r, i in zip(got, range(len(keys)), strict=True):
            expected = [-1 if values[n][i] == 0 else int(values[n][i]) - 1 for n in DUKE_FIELDS]
            assert list(r.labels) == expected
    assert [r.labels[top] for r in records[:4]][1:3] == [-1, -1]
    assert "2 invalid attribute values 0 mapped to -1" in warnings_log.text
    assert "0370 top" in warnings_log.text
    splits["test"][1]["gender"][0] = 3
    _write(path, "duke_attribute", DUKE_FIELDS, splits, rng)
    with pytest.raises(DatasetFormatError, match="value 3 outside 1..2") as error:
        load_duke_attributes(path)
    assert "identity 0002" in str(error.value) and "field 'gender'" in str(error.value)


def test_duplicate_identity_and_non_integer_value(tmp_path):
    rng = np.random.default_rng(5)
    splits = {
        "train": (["0001", "0001"], _random_values(rng, DUKE_FIELDS, 2)),
        "test": (["0002"], _random_values(rng, DUKE_FIELDS, 1)),
    }
    path = _write(tmp_path / "d.mat", "duke_attribute", DUKE_FIELDS, splits, rng)
    with pytest.raises(DatasetFormatError, match="listed twice"):
        load_duke_attributes(path)
    splits["train"] = (["0001", "0003"], splits["train"][1])
    splits["train"][1]["shoes"] = np.array([1.5, 1.0])
    _write(path, "duke_attribute", DUKE_FIELDS, splits, rng)
    with pytest.raises(DatasetFormatError, match="non-integer value") as error:
        load_duke_attributes(path)
    assert "field 'shoes'" in str(error.value)


def test_market_model_encoding_expands_age_and_keeps_unknowns():
    from reid_jax.data.formats.attributes import market_model_encoding

    values = np.arange(27) % 2
    values[9] = 2  # adult
    encoded = market_model_encoding(values[None])[0]
    assert encoded.shape == (30,)
    np.testing.assert_array_equal(encoded[:9], values[:9])
    np.testing.assert_array_equal(encoded[9:13], [0, 0, 1, 0])
    np.testing.assert_array_equal(encoded[13:], values[10:])
    unknown = np.full(27, -1)
    assert (market_model_encoding(unknown) == -1).all()
    with pytest.raises(ValueError, match="27"):
        market_model_encoding(np.zeros(30))
