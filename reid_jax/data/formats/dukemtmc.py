"""DukeMTMC-reID reader: split folders of JPEGs named `PPPP_cX_fFFFFFFF.jpg` (alignedreid §1.3).

`bounding_box_train/` -> 'train' (16,522 images), `query/` -> 'query' (2,228),
`bounding_box_test/` -> 'gallery' (17,661, including 408 distractor identities, which are
ordinary ids). Cameras `c1..c8` become camera_id 0..7. There are no junk (-1) images (such a
name is an error); ids start at 0001, so a `0000` file in `bounding_box_train/` or `query/`
is treated like Market's distractors: skipped and logged, never an identity class or query.
"""

from __future__ import annotations

import os
import re

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _folders
from reid_jax.data.records import CameraImage

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
RELEASE_NAMES = ("DukeMTMC-reID",)
NUM_CAMERAS = 8
# At most 18 id digits (fits int64); ASCII digits only.
_NAME = re.compile(r"^(\d{1,18})_c(\d+)_f(\d+)\.jpg$", re.IGNORECASE | re.ASCII)
GALLERY_ONLY_IDS = frozenset({0})


def parse_duke_name(name: str, path: str | None = None) -> tuple[int, int]:
    """Parses a DukeMTMC-reID file name such as `0005_c2_f0046985.jpg`.

    Args:
      name: base name.
      path: full path for the error message (default: `name`).

    Returns:
      (person_id, camera_id0) with camera c1 -> 0.

    Raises:
      DatasetFormatError: the name does not follow the convention or the camera is not 1..8.
    """
    match = _NAME.match(name)
    if match is None:
        raise DatasetFormatError(
            path or name, "file name does not match '<id>_c<camera>_f<frame>.jpg'", field="name"
        )
    person_id, camera = int(match.group(1)), int(match.group(2))
    if not 1 <= camera <= NUM_CAMERAS:
        raise DatasetFormatError(
            path or name, f"camera {camera} not in 1..{NUM_CAMERAS}", field="name"
        )
    return person_id, camera - 1


def load_dukemtmc(root: str | os.PathLike) -> list[CameraImage]:
    """Reads DukeMTMC-reID.

    Args:
      root: the `DukeMTMC-reID` folder (or its parent).

    Returns:
      Train, then query, then gallery records, sorted by file name within a split.

    Raises:
      DatasetFormatError: a split folder is missing or a `.jpg` name is malformed.
    """
    root = _folders.resolve_root(os.fspath(root), SPLIT_FOLDERS["train"], RELEASE_NAMES)
    return _folders.scan_split_folders(
        root, SPLIT_FOLDERS, parse_duke_name, gallery_only_ids=GALLERY_ONLY_IDS
    )
