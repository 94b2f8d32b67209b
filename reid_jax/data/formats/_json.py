"""Safe JSON loading and typed field access for the annotation-file parsers.

Every failure raises `DatasetFormatError` naming the file, the record index and the field, so a
broken download or a hand-edited file is found at load time, not as a wrong label later.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from typing import Any

from reid_jax.data.errors import DatasetFormatError

# Ids and labels become int64 arrays downstream; a larger JSON integer would overflow there.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# ASCII only: str.isdigit() also accepts e.g. '²', which int() then refuses.
_DECIMAL = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)


def load_json(path: str | os.PathLike, expected_type: type = list) -> Any:
    """Reads a JSON file and checks its top-level type.

    Args:
      path: the JSON file.
      expected_type: required type of the top-level value (`list` or `dict`).

    Returns:
      The decoded value.

    Raises:
      DatasetFormatError: missing/unreadable file, invalid or truncated JSON, wrong top-level type.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except OSError as e:
        raise DatasetFormatError(path, f"cannot read file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DatasetFormatError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise DatasetFormatError(
            path, f"invalid or truncated JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from e
    except RecursionError as e:  # json's decoder recurses once per nested array/object
        raise DatasetFormatError(path, "JSON nested too deeply to be an annotation file") from e
    if not isinstance(value, expected_type):
        raise DatasetFormatError(
            path, f"top level must be a JSON {expected_type.__name__}, got {type(value).__name__}"
        )
    return value


def require(entry: Any, field: str, *, path: str, index: int) -> Any:
    """Returns `entry[field]` of a JSON object record.

    Args:
      entry: one decoded record; must be a dict.
      field: required key.
      path: annotation file, for the error message.
      index: record index in the file, for the error message.

    Returns:
      The raw value.
    """
    if not isinstance(entry, dict):
        raise DatasetFormatError(
            path, f"record must be a JSON object, got {type(entry).__name__}", record=index
        )
    if field not in entry:
        raise DatasetFormatError(path, "missing required field", record=index, field=field)
    return entry[field]


def _type_error(path: str, index: int, field: str, wanted: str, value: Any) -> DatasetFormatError:
    return DatasetFormatError(
        path,
        f"expected {wanted}, got {type(value).__name__} {value!r:.60}",
        record=index,
        field=field,
    )


def get_str(entry: Any, field: str, *, path: str, index: int) -> str:
    """Returns a required non-empty (after stripping) string field, unchanged."""
    value = require(entry, field, path=path, index=index)
    if not isinstance(value, str):
        raise _type_error(path, index, field, "a string", value)
    if not value.strip():
        raise DatasetFormatError(path, "empty string", record=index, field=field)
    return value


def get_int(
    entry: Any,
    field: str,
    *,
    path: str,
    index: int,
    minimum: int | None = None,
    allow_digit_str: bool = False,
) -> int:
    """Returns a required int64-sized integer field (bools rejected; optionally decimal strings).

    Args:
      entry: one decoded record.
      field: required key.
      path: annotation file, for errors.
      index: record index, for errors.
      minimum: smallest allowed value, if any.
      allow_digit_str: accept ASCII decimal strings such as "0123" or "-5" and convert them.

    Returns:
      The integer.
    """
    value = require(entry, field, path=path, index=index)
    if allow_digit_str and isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = int(value)
    if type(value) is not int:
        raise _type_error(path, index, field, "an integer", value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise DatasetFormatError(
            path, f"integer {value:.3g} does not fit in int64", record=index, field=field
        )
    if minimum is not None and value < minimum:
        raise DatasetFormatError(
            path, f"must be >= {minimum}, got {value}", record=index, field=field
        )
    return value


def get_id_str(entry: Any, field: str, *, path: str, index: int) -> str:
    """Returns an identifier field stored either as a string or as an integer, as a string."""
    value = require(entry, field, path=path, index=index)
    if type(value) is int:
        return str(value)
    if not isinstance(value, str):
        raise _type_error(path, index, field, "a string or integer id", value)
    if not value.strip():
        raise DatasetFormatError(path, "empty id", record=index, field=field)
    return value


def get_captions(entry: Any, field: str, *, path: str, index: int) -> tuple[str, ...]:
    """Returns a required non-empty list of non-empty caption strings.

    Raises:
      DatasetFormatError: not a list, empty list, a non-string or an empty (blank) caption; the
        field is reported as e.g. `captions[1]`.
    """
    value = require(entry, field, path=path, index=index)
    if not isinstance(value, list):
        raise _type_error(path, index, field, "a list of strings", value)
    if not value:
        raise DatasetFormatError(path, "no captions", record=index, field=field)
    for j, caption in enumerate(value):
        if not isinstance(caption, str):
            raise _type_error(path, index, f"{field}[{j}]", "a string", caption)
        if not caption.strip():
            raise DatasetFormatError(path, "empty caption", record=index, field=f"{field}[{j}]")
    return tuple(value)


def get_int_labels(
    entry: Any, field: str, *, path: str, index: int, length: int, allowed: Collection[int]
) -> tuple[int, ...]:
    """Returns a required list of `length` ints, each in `allowed` (bools rejected)."""
    value = require(entry, field, path=path, index=index)
    if not isinstance(value, list):
        raise _type_error(path, index, field, f"a list of {length} integers", value)
    if len(value) != length:
        raise DatasetFormatError(
            path, f"expected {length} labels, got {len(value)}", record=index, field=field
        )
    # Fast path in C (MALS has 1.5M records); bools hash like 0/1, hence the type check.
    if set(map(type, value)) <= {int} and set(value).issubset(allowed):
        return tuple(value)
    for j, v in enumerate(value):
        if type(v) is not int or v not in allowed:
            raise DatasetFormatError(
                path, f"label {v!r} not in {sorted(allowed)}", record=index, field=f"{field}[{j}]"
            )
    raise AssertionError("unreachable")
