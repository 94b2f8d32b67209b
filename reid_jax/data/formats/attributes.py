"""Market-1501 / DukeMTMC-reID identity attributes (`market_attribute.mat`, `duke_attribute.mat`).

Format (alignedreid §1.4, attribute_reid §2.1-2.2): one struct (`market_attribute` /
`duke_attribute`) with sub-structs `train` and `test`; each holds `image_index` (cell of 4-digit
identity strings) and one 1 x n numeric row per attribute. The field order differs between
`train` and `test`, so fields are looked up by name and emitted in the FIXED canonical order of
`MARKET_ATTRIBUTE_NAMES` / `DUKE_ATTRIBUTE_NAMES`. Coding: 1 -> 0 (no / first option),
2 -> 1 (yes / second option); Market `age` 1..4 -> 0..3 (young, teenager, adult, old).
Duke quirk: `top` is 0 for train ids 0370 and 0679; a 0 in any Duke field becomes -1 (unknown)
and is logged with its count. Any other value outside the coding is an error.
"""

from __future__ import annotations

import os

import numpy as np

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _mat
from reid_jax.data.records import AttributeRecord

# 9 two-valued non-colour fields, age (4 classes), 8 upper and 9 lower colour flags.
MARKET_ATTRIBUTE_NAMES: tuple[str, ...] = (
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
)
# gender, top, 5 carried items/headwear, shoes, 8 upper and 7 lower colour flags.
DUKE_ATTRIBUTE_NAMES: tuple[str, ...] = (
    "gender",
    "top",
    "boots",
    "hat",
    "backpack",
    "bag",
    "handbag",
    "shoes",
    "upblack",
    "upwhite",
    "upred",
    "uppurple",
    "upgray",
    "upblue",
    "upgreen",
    "upbrown",
    "downblack",
    "downwhite",
    "downred",
    "downgray",
    "downblue",
    "downgreen",
    "downbrown",
)
SPLITS = ("train", "test")
_INDEX_FIELD = "image_index"


def _split_records(
    split_struct,
    split: str,
    *,
    struct_name: str,
    names: tuple[str, ...],
    num_values: dict[str, int],
    zero_is_unknown: bool,
    mat_path: str,
    warnings: _files.WarningCounter,
) -> list[AttributeRecord]:
    """Parses one split sub-struct into per-identity records."""
    where = f"{struct_name}.{split}"
    keys = _mat.cell_strings(
        _mat.get_field(split_struct, _INDEX_FIELD, path=mat_path, record=where),
        path=mat_path,
        field=_INDEX_FIELD,
        record=where,
    )
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DatasetFormatError(
            mat_path, f"identity {dup!r} listed twice", record=where, field=_INDEX_FIELD
        )
    extra = set(_mat.struct_field_names(split_struct)) - set(names) - {_INDEX_FIELD}
    for field in sorted(extra):
        warnings.add("unexpected attribute fields ignored", f"{where}.{field}")
    labels = np.empty((len(keys), len(names)), np.int64)
    for a, name in enumerate(names):
        values = _mat.integer_array(
            _mat.get_field(split_struct, name, path=mat_path, record=where),
            path=mat_path,
            field=name,
            record=where,
            length=len(keys),
        )
        valid = (values >= 1) & (values <= num_values.get(name, 2))
        unknown = (values == 0) if zero_is_unknown else np.zeros_like(valid)
        bad = ~valid & ~unknown
        if bad.any():
            i = int(np.argmax(bad))
            raise DatasetFormatError(
                mat_path,
                f"value {values[i]} outside 1..{num_values.get(name, 2)}",
                record=f"{where} identity {keys[i]}",
                field=name,
            )
        for i in np.flatnonzero(unknown):
            warnings.add(
                "invalid attribute values 0 mapped to -1 (unknown)", f"{split} {keys[i]} {name}"
            )
        labels[:, a] = np.where(unknown, -1, values - 1)
    return [
        AttributeRecord(key=key, labels=tuple(row), names=names, split=split)
        for key, row in zip(keys, labels.tolist(), strict=True)
    ]


def _load(
    mat_path: str | os.PathLike,
    struct_name: str,
    names: tuple[str, ...],
    num_values: dict[str, int],
    zero_is_unknown: bool,
) -> list[AttributeRecord]:
    mat_path = os.fspath(mat_path)
    top = _mat.get_field(_mat.load_mat(mat_path), struct_name, path=mat_path)
    warnings = _files.WarningCounter()
    records = []
    for split in SPLITS:
        split_struct = _mat.get_field(top, split, path=mat_path, record=struct_name)
        records += _split_records(
            split_struct,
            split,
            struct_name=struct_name,
            names=names,
            num_values=num_values,
            zero_is_unknown=zero_is_unknown,
            mat_path=mat_path,
            warnings=warnings,
        )
    warnings.flush(mat_path)
    return records


def load_market_attributes(mat_path: str | os.PathLike) -> list[AttributeRecord]:
    """Reads `market_attribute.mat` (751 train + 750 test identities on the real file).

    Args:
      mat_path: the .mat file.

    Returns:
      Train records then test records, each in file order: `key` = identity string ('0001'),
      `labels` = 27 ints in `MARKET_ATTRIBUTE_NAMES` order (binary 0/1, `age` 0..3),
      `split` 'train' or 'test'.

    Raises:
      DatasetFormatError: malformed file, missing struct/field, wrong length, non-integer or
        out-of-range value, duplicated identity.
    """
    return _load(
        mat_path, "market_attribute", MARKET_ATTRIBUTE_NAMES, {"age": 4}, zero_is_unknown=False
    )


def load_duke_attributes(mat_path: str | os.PathLike) -> list[AttributeRecord]:
    """Reads `duke_attribute.mat` (702 train + 1,110 test identities on the real file).

    Args:
      mat_path: the .mat file.

    Returns:
      Train records then test records: `key` = identity string, `labels` = 23 ints in
      `DUKE_ATTRIBUTE_NAMES` order (0/1; -1 where the file stores the invalid value 0, e.g.
      `top` of train ids 0370 and 0679, logged with its count), `split` 'train' or 'test'.

    Raises:
      DatasetFormatError: malformed file, missing struct/field, wrong length, non-integer value,
        a value other than 0/1/2, duplicated identity.
    """
    return _load(mat_path, "duke_attribute", DUKE_ATTRIBUTE_NAMES, {}, zero_is_unknown=True)


MARKET_MODEL_WIDTH = 30


def market_model_encoding(values: np.ndarray) -> np.ndarray:
    """Market-1501 record vectors [..., 27] -> the 30-column model encoding (attribute_reid
    §2.1 [D]): the 9 two-valued fields as they are, age (0..3) as 4 one-hot columns, then the
    8 upper and 9 lower colour flags. -1 (unknown) stays -1, across all 4 age columns.
    """
    values = np.asarray(values)
    if values.shape[-1] != len(MARKET_ATTRIBUTE_NAMES):
        raise ValueError(f"expected [..., 27] Market attributes, got shape {values.shape}")
    age = values[..., 9:10]
    one_hot = (age == np.arange(4)).astype(values.dtype)
    one_hot = np.where(age < 0, -1, one_hot)
    return np.concatenate([values[..., :9], one_hot, values[..., 10:]], axis=-1)
