"""Attribute queries: `gender=female hair=long upper=red backpack=yes` -> an attribute vector.

One small language for every attribute-capable model and for the search command. A query is
whitespace-separated `field=value` terms, case-insensitive, each field at most once; fields
left out are "don't care". Colour fields take one or more colours joined by '+'
(`upper=red+white`) or `none`; a colour field given sets every colour flag of its group (the
named ones to 1, the others to 0).

Each dataset has an `AttributeVocabulary`: its attribute columns (the record order of its
reader, e.g. `MARKET_ATTRIBUTE_NAMES`) and the query fields over them. The result,
`AttributeQuery.values`, is a vector in that column order and coding (0/1, Market age
0..3), with -1 where the query says nothing. Bad input raises `AttributeQueryError`, whose
message names the term and lists what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from reid_jax.data.formats.attributes import DUKE_ATTRIBUTE_NAMES, MARKET_ATTRIBUTE_NAMES
from reid_jax.data.formats.pa100k import PA100K_ATTRIBUTE_NAMES

UNKNOWN = -1
NONE_VALUE = "none"


class AttributeQueryError(ValueError):
    """A query term names an unknown field or value, repeats a field, or is malformed."""


@dataclasses.dataclass(frozen=True)
class ChoiceField:
    """A field with one of several values, stored as a code in one column.

    Attributes:
      name: the query field name.
      column: the attribute column it sets.
      values: value names; value i is stored as code i.
    """

    name: str
    column: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ColourField:
    """A group of independent colour flags (one column per colour, 1 = worn).

    Attributes:
      name: the query field name ('upper', 'lower').
      columns: colour name -> attribute column, in column order.
    """

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(colour for colour, _ in self.columns) + (NONE_VALUE,)


Field = ChoiceField | ColourField


@dataclasses.dataclass(frozen=True)
class AttributeVocabulary:
    """The attribute columns of a dataset and the query fields over them.

    Attributes:
      name: dataset name (in error messages).
      attributes: the column names, in the order of the dataset's attribute vectors.
      fields: the query fields; every column belongs to exactly one field.
    """

    name: str
    attributes: tuple[str, ...]
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        owned = [f.column for f in self.fields if isinstance(f, ChoiceField)]
        owned += [c for f in self.fields if isinstance(f, ColourField) for _, c in f.columns]
        if sorted(owned) != sorted(self.attributes):
            raise ValueError(f"{self.name}: fields must cover every attribute column once")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate field names")

    def field(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise AttributeQueryError(
            f"unknown field '{name}' for {self.name} attributes; fields: "
            + ", ".join(f.name for f in self.fields)
        )

    def describe(self) -> str:
        """One line per field: `name: value | value | ...`."""
        return "\n".join(
            f"{f.name}: {' | '.join(f.values)}"
            + (" (several with '+')" if isinstance(f, ColourField) else "")
            for f in self.fields
        )


@dataclasses.dataclass(frozen=True)
class AttributeQuery:
    """A parsed query.

    Attributes:
      text: the query as written.
      values: [A] int32 in the vocabulary's column order and coding, -1 = not asked.
    """

    text: str
    values: np.ndarray

    @property
    def known(self) -> np.ndarray:
        """[A] bool, the columns the query fixes."""
        return self.values != UNKNOWN


def parse_query(text: str, vocabulary: AttributeVocabulary) -> AttributeQuery:
    """Parses `field=value ...` into an `AttributeQuery` over `vocabulary`.

    Raises:
      AttributeQueryError: an empty query, a term without '=', an unknown field or value
        (the message lists the allowed ones), a field given twice, or `none` combined with
        colours.
    """
    terms = text.split()
    if not terms:
        raise AttributeQueryError(
            "empty attribute query; write field=value terms, e.g. "
            f"'{_example(vocabulary)}'. Fields:\n{vocabulary.describe()}"
        )
    column = {name: i for i, name in enumerate(vocabulary.attributes)}
    values = np.full(len(vocabulary.attributes), UNKNOWN, np.int32)
    seen: set[str] = set()
    for term in terms:
        name, sep, value = term.lower().partition("=")
        if not sep or not name or not value:
            raise AttributeQueryError(f"'{term}' is not a field=value term")
        field = vocabulary.field(name)
        if name in seen:
            raise AttributeQueryError(f"field '{name}' is given twice")
        seen.add(name)
        if isinstance(field, ChoiceField):
            if value not in field.values:
                raise AttributeQueryError(_bad_value(field, value))
            values[column[field.column]] = field.values.index(value)
            continue
        colours = value.split("+")
        allowed = dict(field.columns)
        if colours == [NONE_VALUE]:
            colours = []
        elif NONE_VALUE in colours:
            raise AttributeQueryError(f"'{term}': 'none' cannot be combined with colours")
        for colour in colours:
            if colour not in allowed:
                raise AttributeQueryError(_bad_value(field, colour))
        for colour, col in field.columns:
            values[column[col]] = int(colour in colours)
    return AttributeQuery(text=text, values=values)


def format_query(values: Sequence[int] | np.ndarray, vocabulary: AttributeVocabulary) -> str:
    """The query string of an attribute vector (-1 entries left out); `parse_query` inverts it
    for every vector whose colour groups are fully known or fully unknown."""
    values = np.asarray(values)
    column = {name: i for i, name in enumerate(vocabulary.attributes)}
    terms = []
    for field in vocabulary.fields:
        if isinstance(field, ChoiceField):
            code = int(values[column[field.column]])
            if code != UNKNOWN:
                terms.append(f"{field.name}={field.values[code]}")
            continue
        flags = [(colour, int(values[column[c]])) for colour, c in field.columns]
        if all(flag == UNKNOWN for _, flag in flags):
            continue
        worn = [colour for colour, flag in flags if flag == 1]
        terms.append(f"{field.name}={'+'.join(worn) if worn else NONE_VALUE}")
    return " ".join(terms)


def _bad_value(field: Field, value: str) -> str:
    return f"unknown value '{value}' for field '{field.name}'; allowed: {', '.join(field.values)}"


def _example(vocabulary: AttributeVocabulary) -> str:
    field = vocabulary.fields[0]
    return f"{field.name}={field.values[-1 if isinstance(field, ChoiceField) else 0]}"


def _colours(name: str, prefix: str, attributes: Sequence[str]) -> ColourField:
    return ColourField(
        name, tuple((a[len(prefix) :], a) for a in attributes if a.startswith(prefix))
    )


_NO_YES = ("no", "yes")

MARKET = AttributeVocabulary(
    name="Market-1501",
    attributes=MARKET_ATTRIBUTE_NAMES,
    fields=(
        ChoiceField("gender", "gender", ("male", "female")),
        ChoiceField("hair", "hair", ("short", "long")),
        ChoiceField("sleeve", "up", ("long", "short")),
        ChoiceField("lower_length", "down", ("long", "short")),
        ChoiceField("lower_type", "clothes", ("dress", "pants")),
        ChoiceField("hat", "hat", _NO_YES),
        ChoiceField("backpack", "backpack", _NO_YES),
        ChoiceField("bag", "bag", _NO_YES),
        ChoiceField("handbag", "handbag", _NO_YES),
        ChoiceField("age", "age", ("young", "teenager", "adult", "old")),
        _colours("upper", "up", MARKET_ATTRIBUTE_NAMES[10:18]),
        _colours("lower", "down", MARKET_ATTRIBUTE_NAMES[18:]),
    ),
)
"""Market-1501 `market_attribute.mat` (attribute_reid §2.1; coding of `load_market_attributes`)."""

DUKE = AttributeVocabulary(
    name="DukeMTMC-reID",
    attributes=DUKE_ATTRIBUTE_NAMES,
    fields=(
        ChoiceField("gender", "gender", ("male", "female")),
        ChoiceField("sleeve", "top", ("short", "long")),
        ChoiceField("boots", "boots", _NO_YES),
        ChoiceField("hat", "hat", _NO_YES),
        ChoiceField("backpack", "backpack", _NO_YES),
        ChoiceField("bag", "bag", _NO_YES),
        ChoiceField("handbag", "handbag", _NO_YES),
        ChoiceField("shoes", "shoes", ("dark", "light")),
        _colours("upper", "up", DUKE_ATTRIBUTE_NAMES[8:16]),
        _colours("lower", "down", DUKE_ATTRIBUTE_NAMES[16:]),
    ),
)
"""DukeMTMC-reID `duke_attribute.mat` (attribute_reid §2.2; coding of `load_duke_attributes`)."""


def binary_vocabulary(name: str, attributes: Sequence[str]) -> AttributeVocabulary:
    """One `attribute=no|yes` field per binary column (PA-100K, PETA); field names are the
    column names lower-cased."""
    return AttributeVocabulary(
        name=name,
        attributes=tuple(attributes),
        fields=tuple(ChoiceField(a.lower(), a, _NO_YES) for a in attributes),
    )


PA100K = binary_vocabulary("PA-100K", PA100K_ATTRIBUTE_NAMES)
"""PA-100K's 26 binary attributes (`pa100k.PA100K_ATTRIBUTE_NAMES`), e.g. `female=yes`."""

VOCABULARIES: dict[str, AttributeVocabulary] = {
    "market1501": MARKET,
    "dukemtmc": DUKE,
    "pa100k": PA100K,
}
