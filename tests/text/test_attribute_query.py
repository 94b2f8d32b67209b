import numpy as np
import pytest

from reid_jax.data.formats.attributes import DUKE_ATTRIBUTE_NAMES, MARKET_ATTRIBUTE_NAMES
from reid_jax.text import attribute_query as aq


def _market(**columns: int) -> np.ndarray:
    """A Market vector with the given columns set and every other one unknown (-1)."""
    values = np.full(len(MARKET_ATTRIBUTE_NAMES), -1, np.int32)
    for name, value in columns.items():
        values[MARKET_ATTRIBUTE_NAMES.index(name)] = value
    return values


def test_issue_example_on_market():
    query = aq.parse_query("gender=female hair=long upper=red backpack=yes", aq.MARKET)
    upper_off = {c: 0 for c in MARKET_ATTRIBUTE_NAMES[10:18]}
    want = _market(gender=1, hair=1, backpack=1, **{**upper_off, "upred": 1})
    np.testing.assert_array_equal(query.values, want)
    assert query.known.sum() == 3 + 8  # three fields and the whole upper-colour group


def test_case_several_colours_none_and_age():
    query = aq.parse_query("  LOWER=Blue+black   upper=none Age=old sleeve=short ", aq.MARKET)
    lower = {c: int(c in ("downblue", "downblack")) for c in MARKET_ATTRIBUTE_NAMES[18:]}
    upper = {c: 0 for c in MARKET_ATTRIBUTE_NAMES[10:18]}
    np.testing.assert_array_equal(query.values, _market(age=3, up=1, **lower, **upper))


def test_duke_and_pa100k_vocabularies():
    duke = aq.parse_query("shoes=light sleeve=long lower=red", aq.DUKE)
    got = dict(zip(DUKE_ATTRIBUTE_NAMES, duke.values.tolist(), strict=True))
    assert got["shoes"] == 1 and got["top"] == 1 and got["downred"] == 1
    assert got["downblack"] == 0 and got["upred"] == -1 and got["gender"] == -1
    pa = aq.parse_query("female=yes skirt&dress=no", aq.PA100K)
    assert pa.values.tolist()[:2] == [1, -1] and pa.values[24] == 0 and pa.known.sum() == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty attribute query"),
        ("gender", "'gender' is not a field=value term"),
        ("gender=", "is not a field=value term"),
        ("=female", "is not a field=value term"),
        ("colour=red", "unknown field 'colour' for Market-1501 attributes; fields: gender, hair"),
        ("gender=woman", "unknown value 'woman' for field 'gender'; allowed: male, female"),
        ("upper=red+teal", "unknown value 'teal' for field 'upper'; allowed: black, white, red"),
        ("upper=none+red", "'none' cannot be combined"),
        ("hat=yes hat=no", "field 'hat' is given twice"),
    ],
)
def test_bad_queries_name_the_term_and_list_the_choices(text, message):
    with pytest.raises(aq.AttributeQueryError, match=message.replace("+", r"\+")):
        aq.parse_query(text, aq.MARKET)


def test_unknown_value_lists_every_allowed_value():
    with pytest.raises(aq.AttributeQueryError) as error:
        aq.parse_query("lower=teal", aq.MARKET)
    for colour in ("black", "white", "pink", "purple", "yellow", "gray", "blue", "green", "brown"):
        assert colour in str(error.value)
    assert "none" in str(error.value)


@pytest.mark.parametrize("vocabulary", [aq.MARKET, aq.DUKE, aq.PA100K])
def test_format_then_parse_gives_the_vector_back(vocabulary):
    rng = np.random.default_rng(0)
    fields = vocabulary.fields
    column = {name: i for i, name in enumerate(vocabulary.attributes)}
    for _ in range(300):
        values = np.full(len(vocabulary.attributes), -1, np.int32)
        for field in fields:
            if rng.random() < 0.3:
                continue  # not asked
            if isinstance(field, aq.ChoiceField):
                values[column[field.column]] = rng.integers(len(field.values))
            else:
                for _, col in field.columns:
                    values[column[col]] = rng.random() < 0.3
        if (values == -1).all():
            continue
        text = aq.format_query(values, vocabulary)
        np.testing.assert_array_equal(aq.parse_query(text, vocabulary).values, values, text)


def test_a_vocabulary_must_cover_every_column_once():
    with pytest.raises(ValueError, match="cover every attribute column once"):
        aq.AttributeVocabulary("x", ("a", "b"), (aq.ChoiceField("a", "a", ("no", "yes")),))
    with pytest.raises(ValueError, match="duplicate field names"):
        aq.AttributeVocabulary(
            "x",
            ("a", "b"),
            (aq.ChoiceField("f", "a", ("no", "yes")), aq.ChoiceField("f", "b", ("no", "yes"))),
        )


def test_describe_lists_every_field():
    lines = aq.MARKET.describe().splitlines()
    assert len(lines) == len(aq.MARKET.fields)
    assert lines[0] == "gender: male | female"
    assert lines[-1].startswith("lower: black | white | pink") and "'+'" in lines[-1]
