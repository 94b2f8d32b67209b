"""Image locations: an image stored in a prepared (TFDS ArrayRecord) dataset, named by a string.

Records read from a prepared dataset (`reid_jax.data.builders.registry.load_prepared_records`)
carry, in place of an image file path,

    tfds://<name>/<split>/<position>@<data_dir>

e.g. `tfds://cuhk_pedes/train/17@/data/tfds`: example `position` of split `split` of the
dataset `name` prepared under the TFDS data directory `data_dir` (which may hold any
character; it is everything after the first '@'). The string goes wherever a path goes
(records, examples, grain elements pickled to worker processes); `transforms.load_rgb`
recognises it and reads the image's encoded bytes from the ArrayRecord files instead of a
file. Each process opens a split once (cached per process id, so a forked grain worker opens
its own readers).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

SCHEME = "tfds://"


class ImageLocation(NamedTuple):
    """The parts of an image location."""

    name: str
    split: str
    position: int
    data_dir: str


def is_location(path: str) -> bool:
    """Whether `path` is an image location rather than a file path."""
    return path.startswith(SCHEME)


def display_name(path: str) -> str:
    """The short name shown for an image: a file's base name, or `<name>/<split>/<position>`
    for a location."""
    if is_location(path):
        head = path.removeprefix(SCHEME).partition("@")[0]
        return head
    return os.path.basename(path)


def make_location(name: str, split: str, position: int, data_dir: str | os.PathLike) -> str:
    """The location string of example `position` of `split` (see the module docstring).

    Args:
      name: builder name, e.g. 'cuhk_pedes'.
      split: split name, e.g. 'train'.
      position: 0-based example position within the split.
      data_dir: the TFDS data directory (made absolute).
    """
    return f"{SCHEME}{name}/{split}/{int(position)}@{os.path.abspath(os.fspath(data_dir))}"


def parse_location(location: str) -> ImageLocation:
    """Splits a location string into its parts.

    Raises:
      ValueError: `location` is not of the form tfds://<name>/<split>/<position>@<data_dir>.
    """
    head, at, data_dir = location.removeprefix(SCHEME).partition("@")
    parts = head.split("/")
    if not is_location(location) or not at or not data_dir or len(parts) != 3:
        raise ValueError(f"{location!r}: not an image location {SCHEME}<name>/<split>/<i>@<dir>")
    name, split, position = parts
    if not position.isdigit():
        raise ValueError(f"{location!r}: position {position!r} is not a non-negative integer")
    return ImageLocation(name, split, int(position), data_dir)


@functools.lru_cache(maxsize=16)
def _open_split(name: str, split: str, data_dir: str, process_id: int):
    del process_id  # part of the cache key only: a forked process opens its own readers
    from reid_jax.data.builders import registry

    return registry.load_data_source(name, data_dir=data_dir, split=split, decode_images=False)


def read_image_bytes(location: str) -> bytes:
    """The encoded image (JPEG/PNG bytes, as the builder stored it) at `location`.

    Raises:
      ValueError: a malformed location.
      FileNotFoundError: no such prepared dataset or split, or the position is past its end
        (the message names the location).
    """
    name, split, position, data_dir = parse_location(location)
    try:
        source = _open_split(name, split, data_dir, os.getpid())
    except Exception as error:  # TFDS raises several types for a missing dataset or split
        message = f"{location}: cannot open the prepared dataset ({error})"
        raise FileNotFoundError(message) from error
    if position >= len(source):
        raise FileNotFoundError(
            f"{location}: position {position} is past the end of {name}/{split} "
            f"({len(source)} examples)"
        )
    return source[position]["image"]
