"""Identity sampling: attribute names/order, Market and MALS codings, variety."""

import collections

import numpy as np
import pytest

from reid_jax.data.synthetic import ATTRIBUTE_NAMES, MARKET_ATTRIBUTE_NAMES
from reid_jax.data.synthetic.attributes import (
    LOWER_COLOURS,
    UPPER_COLOURS,
    mals_values,
    market_codes,
    sample_identity,
)

# aptm §2.2, in order: 10 structural attributes, 8 upper colours, 9 lower colours.
SPEC_MALS_ORDER = (
    "gender",
    "age",
    "hair",
    "hat",
    "backpack",
    "handbag",
    "bag",
    "up",
    "down",
    "clothes",
    "upblack",
    "upwhite",
    "upred",
    "uppurple",
    "upyellow",
    "upblue",
    "upgreen",
    "upgray",
    "downblack",
    "downwhite",
    "downpurple",
    "downyellow",
    "downblue",
    "downgreen",
    "downpink",
    "downgray",
    "downbrown",
)
# alignedreid §1.4: the 27 Market fields.
SPEC_MARKET_FIELDS = {
    "gender",
    "hair",
    "up",
    "down",
    "clothes",
    "hat",
    "backpack",
    "bag",
    "handbag",
    "age",
    "upblack",
    "upwhite",
    "upred",
    "uppurple",
    "upyellow",
    "upgray",
    "upblue",
    "upgreen",
    "downblack",
    "downwhite",
    "downpink",
    "downpurple",
    "downyellow",
    "downgray",
    "downblue",
    "downgreen",
    "downbrown",
}


@pytest.fixture(scope="module")
def people():
    return [sample_identity(np.random.default_rng([7, i])) for i in range(400)]


def test_attribute_names_follow_the_specs():
    assert ATTRIBUTE_NAMES == SPEC_MALS_ORDER
    assert set(MARKET_ATTRIBUTE_NAMES) == SPEC_MARKET_FIELDS
    assert len(MARKET_ATTRIBUTE_NAMES) == 27


def test_market_codes_match_identity(people):
    for p in people:
        codes = market_codes(p)
        assert list(codes) == list(MARKET_ATTRIBUTE_NAMES)
        assert codes["gender"] == (2 if p.female else 1)
        assert codes["hair"] == (2 if p.long_hair else 1)
        assert codes["up"] == (2 if p.short_sleeve else 1)
        assert codes["down"] == (2 if p.short_lower else 1)
        assert codes["clothes"] == (1 if p.skirt else 2)  # 1 = dress/skirt, 2 = pants
        for item in ("hat", "backpack", "bag", "handbag"):
            assert codes[item] == (2 if getattr(p, item) else 1)
        assert codes["age"] == p.age + 1 and 1 <= codes["age"] <= 4
        ups = [c for c in UPPER_COLOURS if codes["up" + c] == 2]
        downs = [c for c in LOWER_COLOURS if codes["down" + c] == 2]
        assert ups == ([p.upper_colour] if p.upper_colour in UPPER_COLOURS else [])
        assert downs == ([p.lower_colour] if p.lower_colour in LOWER_COLOURS else [])
        assert set(codes.values()) <= {1, 2, 3, 4}


def test_mals_values_polarity(people):
    # aptm §2.1: label 1 selects the second prompt of each pair.
    for p in people:
        v = mals_values(p)
        assert list(v) == list(SPEC_MALS_ORDER)
        assert v["gender"] == (0 if p.female else 1)
        assert v["age"] == (1 if p.age >= 2 else 0)
        assert v["hair"] == int(p.long_hair)
        assert v["hat"] == (0 if p.hat else 1)
        assert v["backpack"] == (0 if p.backpack else 1)
        assert v["up"] == int(p.short_sleeve)
        assert v["down"] == int(p.short_lower)
        assert v["clothes"] == (0 if p.skirt else 1)
        worn_up = [n for n in SPEC_MALS_ORDER[10:18] if v[n] == 0]
        worn_down = [n for n in SPEC_MALS_ORDER[18:] if v[n] == 0]
        assert worn_up == (["up" + p.upper_colour] if p.upper_colour in UPPER_COLOURS else [])
        assert worn_down == (["down" + p.lower_colour] if p.lower_colour in LOWER_COLOURS else [])


def test_attribute_distribution_is_varied(people):
    ups = collections.Counter(p.upper_colour for p in people)
    downs = collections.Counter(p.lower_colour for p in people)
    assert all(ups[c] >= 10 for c in UPPER_COLOURS)
    assert all(downs[c] >= 10 for c in LOWER_COLOURS)
    females = sum(p.female for p in people) / len(people)
    assert 0.3 < females < 0.6
    assert {p.age for p in people} == {0, 1, 2, 3}
    for item in ("hat", "backpack", "bag", "handbag", "skirt", "short_lower", "long_hair"):
        assert 0.03 < np.mean([getattr(p, item) for p in people]) < 0.7, item
    vectors = [tuple(market_codes(p).values()) for p in people]
    assert len(set(vectors)) > 0.8 * len(people)


def test_equal_attributes_still_differ_in_detail(people):
    by_vector = collections.defaultdict(list)
    for p in people:
        by_vector[tuple(market_codes(p).values())].append(p)
    pairs = [group[:2] for group in by_vector.values() if len(group) > 1]
    assert pairs, "expected some attribute collisions among 400 people"
    for a, b in pairs:
        assert a != b
        assert (a.upper_rgb, a.lower_rgb, a.skin_rgb, a.height) != (
            b.upper_rgb,
            b.lower_rgb,
            b.skin_rgb,
            b.height,
        )


def test_sampling_is_deterministic():
    a = sample_identity(np.random.default_rng(123))
    b = sample_identity(np.random.default_rng(123))
    c = sample_identity(np.random.default_rng(124))
    assert a == b and a != c
