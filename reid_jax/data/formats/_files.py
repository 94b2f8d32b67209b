"""File-system helpers shared by the parsers: image paths, counted warnings, atomic writes."""

from __future__ import annotations

import collections
import os
import re
import tempfile

from absl import logging

from reid_jax.data.errors import DatasetFormatError


def check_image(image_path: str, *, source: str, record: int | str, field: str | None) -> None:
    """Raises unless `image_path` is an existing regular file (a cheap stat, no decode).

    Args:
      image_path: absolute image path built from the annotation.
      source: the annotation file that named the image.
      record: index or name of the record in `source`.
      field: the field holding the relative path.
    """
    if not os.path.isfile(image_path):
        raise DatasetFormatError(
            source,
            f"image file not found or not a regular file: {image_path}",
            record=record,
            field=field,
        )


def _escapes(rel_path: str) -> str | None:
    """Why `rel_path` could name a file outside the folder it is joined to, or None."""
    if "\x00" in rel_path:
        return "contains a NUL character"
    if os.path.isabs(rel_path) or rel_path.startswith("\\"):
        return "is absolute"
    # Both separators: a Windows-made list must not climb out either.
    if ".." in re.split(r"[/\\]", rel_path):
        return "contains a '..' component"
    return None


def resolve_image(
    base_dir: str,
    rel_path: str,
    *,
    source: str,
    record: int | str,
    field: str | None,
    check_exists: bool,
) -> str:
    """Joins an image path read from a dataset file to its folder; nothing outside is reachable.

    Every reader that takes image paths from an annotation or list file goes through here, so
    an absolute path or a `..` component (a hand-edited or hostile file) is refused before any
    file is opened or even stat'ed.

    Args:
      base_dir: the folder the dataset file's paths are relative to.
      rel_path: the path as stored in the file.
      source: the dataset file that named the image.
      record: index or name of the record in `source`.
      field: the field holding the path.
      check_exists: also require an existing regular file (a stat, no decode).

    Returns:
      `base_dir/rel_path`.

    Raises:
      DatasetFormatError: absolute path, `..` component, NUL character, or (with
        `check_exists`) a missing file; names `source`, `record` and `field`.
    """
    reason = _escapes(rel_path)
    if reason is not None:
        raise DatasetFormatError(
            source,
            f"image path {rel_path!r:.200} {reason}; paths must stay inside {base_dir}",
            record=record,
            field=field,
        )
    image_path = os.path.join(base_dir, rel_path)
    if check_exists:
        check_image(image_path, source=source, record=record, field=field)
    return image_path


class WarningCounter:
    """Counts known dataset quirks and logs each kind once, with its count and a few examples.

    Usage: `counter.add("kind message", example)` per occurrence, then `counter.flush(path)`.
    """

    def __init__(self, max_examples: int = 3):
        self._counts: collections.Counter[str] = collections.Counter()
        self._examples: dict[str, list[str]] = collections.defaultdict(list)
        self._max_examples = max_examples

    def add(self, message: str, example: object = None) -> None:
        """Records one occurrence of `message`, e.g. 'records skipped: ...'."""
        self._counts[message] += 1
        if example is not None and len(self._examples[message]) < self._max_examples:
            self._examples[message].append(str(example))

    def count(self, message: str) -> int:
        """Returns how many times `message` was added."""
        return self._counts[message]

    def flush(self, source: str) -> None:
        """Logs one warning per message kind: `<source>: <count> <message> (e.g. ...)`."""
        for message, count in self._counts.items():
            examples = self._examples.get(message)
            suffix = f" (e.g. {', '.join(examples)})" if examples else ""
            logging.warning("%s: %d %s%s", source, count, message, suffix)
        self._counts.clear()
        self._examples.clear()


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to a temporary file next to `path`, then renames it over `path`."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def require_dir(path: str, what: str) -> str:
    """Returns `path` if it is a directory, else raises naming it and what it should hold."""
    if not os.path.isdir(path):
        raise DatasetFormatError(path, f"missing directory ({what})")
    return path


def find_file(root_or_file: str, candidates: tuple[str, ...], what: str) -> str:
    """`root_or_file` itself if it is a file, else the first of `candidates` under it.

    Raises:
      DatasetFormatError: none exists; names the first candidate and "`what` not found".
    """
    if os.path.isfile(root_or_file):
        return root_or_file
    for name in candidates:
        candidate = os.path.join(root_or_file, name)
        if os.path.isfile(candidate):
            return candidate
    raise DatasetFormatError(os.path.join(root_or_file, candidates[0]), f"{what} not found")
