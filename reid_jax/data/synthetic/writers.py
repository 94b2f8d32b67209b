"""Byte-exact writers of the real on-disk formats (JPEG, CUHK/MALS JSON, Market names and .mat).

Every writer is deterministic: fixed JPEG settings, fixed JSON key order, and a fixed MAT-file
header (scipy would stamp the creation time into it).
"""

from __future__ import annotations

import io
import json
import os
import pathlib

import numpy as np
import scipy.io
from PIL import Image

from reid_jax.data.synthetic.attributes import MARKET_ATTRIBUTE_NAMES

# Field orders of the two splits of the real market_attribute.mat: they differ, which is why
# readers must index fields by name (alignedreid §1.4).
MARKET_TRAIN_FIELD_ORDER: tuple[str, ...] = (
    "age",
    "backpack",
    "bag",
    "handbag",
    "downblack",
    "downblue",
    "downbrown",
    "downgray",
    "downgreen",
    "downpink",
    "downpurple",
    "downwhite",
    "downyellow",
    "upblack",
    "upblue",
    "upgreen",
    "upgray",
    "uppurple",
    "upred",
    "upwhite",
    "upyellow",
    "clothes",
    "down",
    "up",
    "hair",
    "hat",
    "gender",
)
MARKET_TEST_FIELD_ORDER: tuple[str, ...] = (
    "age",
    "backpack",
    "bag",
    "handbag",
    "clothes",
    "down",
    "up",
    "hair",
    "hat",
    "gender",
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
assert sorted(MARKET_TRAIN_FIELD_ORDER) == sorted(MARKET_ATTRIBUTE_NAMES)
assert sorted(MARKET_TEST_FIELD_ORDER) == sorted(MARKET_ATTRIBUTE_NAMES)

_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: reid_jax synthetic generator"


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """Encodes an image as baseline JPEG with fixed settings.

    Args:
      pixels: [H, W, 3] uint8 RGB.
      quality: JPEG quality 1..95.

    Returns:
      the file bytes.
    """
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=quality, subsampling=2)
    return buf.getvalue()


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Writes a file (its folder must exist; the whole tree is renamed into place later).

    Args:
      path: destination inside the temporary dataset tree.
      data: file content.
    """
    with open(path, "wb") as f:
        f.write(data)


def write_json(path: pathlib.Path, obj, *, sort_keys: bool) -> None:
    """Writes JSON deterministically (ASCII, fixed separators, optional sorted keys).

    Args:
      path: destination.
      obj: JSON-able value.
      sort_keys: sort object keys (CUHK-PEDES) or keep insertion order (MALS field order).
    """
    text = json.dumps(obj, sort_keys=sort_keys, ensure_ascii=True, separators=(", ", ": "))
    path.write_text(text + "\n", encoding="ascii")


def market_file_name(person_id: int, camera: int, sequence: int, frame: int, box: int) -> str:
    """Market-1501 image name `PPPP_cXsY_FFFFFF_BB.jpg` (alignedreid §1.3).

    Args:
      person_id: identity; 0 for distractors, -1 for junk (then the name starts with '-1_').
      camera: 1..6.
      sequence: 1..9.
      frame: 0..999999.
      box: 1..99, index of the box within the frame.

    Returns:
      the file name.
    """
    pid = "-1" if person_id == -1 else f"{person_id:04d}"
    return f"{pid}_c{camera}s{sequence}_{frame:06d}_{box:02d}.jpg"


def _split_struct(codes_by_id: dict[int, dict[str, int]], order: tuple[str, ...]) -> dict:
    ids = sorted(codes_by_id)
    struct = {}
    for name in order:
        struct[name] = np.array([[codes_by_id[i][name] for i in ids]], dtype=np.float64)
    index = np.empty((1, len(ids)), dtype=object)
    for k, i in enumerate(ids):
        index[0, k] = f"{i:04d}"
    struct["image_index"] = index
    return struct


def write_market_attributes(
    path: pathlib.Path, train: dict[int, dict[str, int]], test: dict[int, dict[str, int]]
) -> None:
    """Writes market_attribute.mat in the layout of the real file (MATLAB v5).

    `loadmat(path)['market_attribute']` is a 1x1 struct with fields `train` and `test`; each is
    a 1x1 struct with 27 1xN double rows (1/2 coding, age 1..4) in a split-specific order,
    then `image_index`, a 1xN cell of 4-digit id strings in ascending id order.

    Args:
      path: output file.
      train, test: identity -> market_codes(identity).
    """
    content = {
        "market_attribute": {
            "train": _split_struct(train, MARKET_TRAIN_FIELD_ORDER),
            "test": _split_struct(test, MARKET_TEST_FIELD_ORDER),
        }
    }
    buf = io.BytesIO()
    scipy.io.savemat(buf, content, format="5", oned_as="row")
    raw = bytearray(buf.getvalue())
    # Bytes 0..115 are free text holding the creation time; make them constant.
    raw[:116] = _MAT_HEADER.ljust(116, b" ")
    write_bytes(path, bytes(raw))


def make_dirs(root: pathlib.Path, relative: list[str]) -> None:
    """Creates folders.

    Args:
      root: base folder.
      relative: folder paths relative to root.
    """
    for rel in relative:
        os.makedirs(root / rel, exist_ok=True)
