"""The records file of a prepared dataset: the parser's records and where each image is stored.

A training run needs every record (captions, identities, labels) at start-up but only the
images it draws. Reading the records from the ArrayRecord examples would read every image
too (1.5 M of them for MALS), so `registry.prepare_dataset` writes them once more, without
images, into `<data_dir>/<name>/<version>/reid_jax_records.json`:

    {"format": 1, "record_type": "CaptionedImage", "fields": [...], "manual_dir": "...",
     "records": [[field values...], ...],      # parser (file) order
     "positions": [["train", 0], ...]}         # (split, position) of each record's example

`image_path` holds the path relative to the manual dir (for people reading the file); a
loaded record gets an image location instead (`reid_jax.data.image_locations`). The file is
written last (temporary name, then rename), so its presence means the dataset is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reid_jax.data.records import CameraImage, CaptionedImage, CaptionPair

RECORDS_FILE = "reid_jax_records.json"
FORMAT = 1
RECORD_TYPES = {cls.__name__: cls for cls in (CaptionedImage, CameraImage, CaptionPair)}


def _tupled(value: Any) -> Any:
    """JSON lists back to the tuples the record dataclasses hold (None and scalars as is)."""
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def write_records_file(
    path: str | os.PathLike,
    records: Sequence[Any],
    positions: Sequence[tuple[str, int]],
    *,
    manual_dir: str | os.PathLike,
) -> None:
    """Writes the records file atomically.

    Args:
      path: the file to write.
      records: parsed records in file order, all of one `RECORD_TYPES` class.
      positions: (split, position) of each record's example, same length.
      manual_dir: the folder the records' absolute image paths lie under.

    Raises:
      ValueError: mixed or unknown record types, or a length mismatch.
    """
    if len(records) != len(positions):
        raise ValueError(f"{len(records)} records but {len(positions)} positions")
    kinds = {type(r) for r in records}
    if len(kinds) != 1 or (kind := kinds.pop()).__name__ not in RECORD_TYPES:
        raise ValueError(f"records must all be one of {sorted(RECORD_TYPES)}, got {kinds}")
    manual_dir = os.path.abspath(os.fspath(manual_dir))
    rows = []
    for record in records:
        row = dataclasses.asdict(record)
        row["image_path"] = os.path.relpath(record.image_path, manual_dir)
        rows.append(list(row.values()))
    payload = {
        "format": FORMAT,
        "record_type": kind.__name__,
        "fields": [f.name for f in dataclasses.fields(kind)],
        "manual_dir": manual_dir,
        "records": rows,
        "positions": [[split, int(position)] for split, position in positions],
    }
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w") as f:
        json.dump(payload, f, separators=(",", ":"))
    os.replace(temporary, path)


def read_records_file(path: str | os.PathLike) -> tuple[list[Any], list[tuple[str, int]]]:
    """Reads a records file.

    Args:
      path: a file written by `write_records_file`.

    Returns:
      (records with `image_path` relative to the manual dir, their (split, position) pairs).

    Raises:
      FileNotFoundError: no such file.
      ValueError: another format version or record type (the message names the file).
    """
    with open(path) as f:
        payload = json.load(f)
    if payload.get("format") != FORMAT or payload.get("record_type") not in RECORD_TYPES:
        raise ValueError(
            f"{path}: not a records file of format {FORMAT} "
            f"(format {payload.get('format')!r}, record type {payload.get('record_type')!r}); "
            "prepare the dataset again"
        )
    kind = RECORD_TYPES[payload["record_type"]]
    fields = payload["fields"]
    if fields != [f.name for f in dataclasses.fields(kind)]:
        raise ValueError(f"{path}: fields {fields} do not match {kind.__name__}")
    records = [
        kind(**dict(zip(fields, map(_tupled, row), strict=True))) for row in payload["records"]
    ]
    positions = [(split, int(position)) for split, position in payload["positions"]]
    return records, positions
