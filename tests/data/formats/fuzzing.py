"""Shared machinery of the fuzzed-reader tests (`test_fuzz_*.py`): settings, case counts, oracles.

Each fuzz test mutates a real-format fixture written by the readers' own test modules, runs the
reader through `run_reader` and accepts exactly two outcomes: the records that a reference
decoding of the mutated file predicts, or a `DatasetFormatError` naming the file, the record
and the field the reference finds wrong. Any other exception escapes and fails the test
(hypothesis then shrinks it to a minimal file and prints it).

Runs are bounded and reproducible: a fixed `max_examples`, `derandomize=True`, no example
database. `CASES` / `ERRORS` count the cases per reader; the package conftest prints them in
pytest's terminal summary.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from reid_jax.data.errors import DatasetFormatError

MAX_EXAMPLES = 150
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CASES: collections.Counter[str] = collections.Counter()  # reader -> cases run
ERRORS: collections.Counter[str] = collections.Counter()  # reader -> DatasetFormatError outcomes

MISSING = object()  # a field that is absent from its record
ANY = object()  # `check_error`: do not check the record
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ASCII_SPACE = " \t\n\r\x0b\x0c"


def run_reader(reader: str, load: Callable[[], Any]) -> Any:
    """Runs `load()` as one counted case of `reader`.

    Returns:
      The reader's result, or the `DatasetFormatError` it raised. Any other exception escapes.
    """
    CASES[reader] += 1
    try:
        return load()
    except DatasetFormatError as error:
        ERRORS[reader] += 1
        return error


def base_field(field: str | None) -> str | None:
    """'captions[1]' -> 'captions': the record field an element error belongs to."""
    return None if field is None else re.sub(r"(\[\d+\])+$", "", field)


def check_error(
    outcome: Any, *, path: str | os.PathLike, record: Any = ANY, fields: Any = None
) -> None:
    """Asserts that `outcome` is a DatasetFormatError naming `path`, `record` and a field.

    Args:
      outcome: what `run_reader` returned.
      path: the file the error must name.
      record: the record it must name (None: none); ANY skips the check.
      fields: the fields (element suffixes like `[3]` removed) one of which it must name;
        None skips the check.
    """
    assert isinstance(outcome, DatasetFormatError), f"bad input accepted: {outcome!r:.300}"
    message = str(outcome)
    assert outcome.path == os.fspath(path) and message.startswith(os.fspath(path)), message
    if record is not ANY:
        assert outcome.record == record, (record, message)
        if record is not None:
            assert f", record {record}" in message, message
    if fields is not None:
        assert base_field(outcome.field) in fields, (fields, message)
        if outcome.field is not None:
            assert f", field '{outcome.field}'" in message, message


# --- value oracles -------------------------------------------------------------------------


def is_int64(value: Any, minimum: int = INT64_MIN) -> bool:
    """A JSON integer (not a bool) in [minimum, int64 max]."""
    return type(value) is int and minimum <= value <= INT64_MAX


def is_text(value: Any) -> bool:
    """A string with something other than whitespace."""
    return isinstance(value, str) and bool(value.strip())


def is_safe_existing_path(value: Any, base_dir: str) -> bool:
    """A relative path without NUL or '..' that names an existing file under `base_dir`."""
    if not is_text(value) or "\x00" in value or value.startswith(("/", "\\")):
        return False
    if ".." in value.replace("\\", "/").split("/"):
        return False
    return os.path.isfile(os.path.join(base_dir, value))


def decode_json(raw: bytes) -> Any:
    """The reference decoding of a JSON file's bytes; MISSING when it is not valid JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return MISSING


# --- strategies ----------------------------------------------------------------------------

HUGE_TEXT = "a long caption " * 2000 + "終"  # 30,001 characters
TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\t\n", "Ünïcødé 行人 穿着 👟", "\u200b", "\u00a0", HUGE_TEXT]),
)
# Integers around every boundary a reader checks (negative ids, int64 overflow).
INTEGERS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 10**30]),
    st.integers(),
)
# Strings that look like numbers to a careless parser.
NUMERIC_STRINGS = st.sampled_from(
    ["7", " 12 ", "-3", "--5", "+4", "²", "١٢", "٣", "0x1f", "1e3", "1.0", "", "9" * 25, "12\u00a0"]
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), INTEGERS, st.floats(), TEXTS),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=5,
)


OUTSIDE_FILE = "outside.jpg"  # fixtures put one next to the image folder: escapes reach it


def dangerous_paths(existing: list[str], base_dir: str) -> st.SearchStrategy[str]:
    """Image paths that break the layout (absolute, escaping to a file that exists, NUL,
    missing) and odd but valid spellings of the existing relative paths."""
    return st.one_of(
        st.sampled_from(
            [
                "/etc/passwd",
                f"../{OUTSIDE_FILE}",
                f"x/../../{OUTSIDE_FILE}",
                f"..\\{OUTSIDE_FILE}",
                "..",
                "\\server\\share.jpg",
                "a\x00b.jpg",
                "",
                "   ",
                "missing.jpg",
                "名前/画像.jpg",
                "x" * 300 + ".jpg",
                os.path.join(os.path.dirname(base_dir), OUTSIDE_FILE),
            ]
        ),
        st.sampled_from(existing),
        st.sampled_from(existing).map(lambda p: "./" + p),
        st.sampled_from(existing).map(lambda p: p.replace("/", "//", 1)),
        st.sampled_from(existing).map(lambda p: os.path.join(base_dir, p)),
    )


BREAKS = ("truncate", "insert", "garbage", "deep", "empty")


@st.composite
def file_bytes(draw: st.DrawFn, raw: bytes, breaks: tuple[str, ...] = BREAKS) -> bytes:
    """The bytes of a valid file, usually kept, else broken in one of the `breaks` ways:
    truncated, spliced with garbage, replaced by garbage, deeply nested JSON, emptied."""
    kind = draw(st.sampled_from(["keep"] * len(breaks) + list(breaks)))
    if kind == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if kind == "insert":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    if kind == "garbage":
        return draw(st.binary(max_size=48))
    if kind == "deep":  # nesting that exhausts a recursive decoder
        return b"[" * 30000 + b"]" * 30000
    if kind == "empty":
        return b""
    return raw


def write_bytes(path: str | os.PathLike, raw: bytes) -> str:
    """Writes `raw` to `path` (which exists already) and returns the path."""
    with open(path, "wb") as f:
        f.write(raw)
    return os.fspath(path)
