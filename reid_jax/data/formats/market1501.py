"""Market-1501 reader: split folders of JPEGs named `PPPP_cXsY_FFFFFF_BB.jpg` (alignedreid §1.3).

`bounding_box_train/` -> 'train', `query/` -> 'query', `bounding_box_test/` -> 'gallery'.
`PPPP` is a signed person id: `0000` marks distractors (kept as true negatives, person_id 0)
and `-1` junk images (kept with person_id -1 so the evaluator can drop them; the gallery used
for evaluation is `bounding_box_test` minus these 3,819 images). Both exist only in the
gallery (alignedreid §1.3): a `-1` or `0000` file in `bounding_box_train/` or `query/` is
skipped and logged, never made an identity class or a query. Because `-1` shifts every later
character, names are parsed with a regex, never by fixed positions. Cameras `c1..c6` become
camera_id 0..5. `gt_query/` and `gt_bbox/` are not read.
"""

from __future__ import annotations

import os
import re

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _folders
from reid_jax.data.records import CameraImage

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
RELEASE_NAMES = ("Market-1501-v15.09.15", "Market-1501")
NUM_CAMERAS = 6
# Junk -1 or an id (at most 18 digits, so it fits int64), `_c`, one camera digit, `s` +
# sequence, frame, box index. ASCII: `\d` would also match e.g. Arabic-Indic digits.
_NAME = re.compile(r"^(-1|\d{1,18})_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$", re.IGNORECASE | re.ASCII)
GALLERY_ONLY_IDS = frozenset({-1, 0})


def parse_market_name(name: str, path: str | None = None) -> tuple[int, int]:
    """Parses a Market-1501 image file name.

    Args:
      name: base name, e.g. `0002_c1s1_000451_03.jpg` or `-1_c3s2_012345_01.jpg`.
      path: full path for the error message (default: `name`).

    Returns:
      (person_id, camera_id0): the signed id as stored (0 distractor, -1 junk) and the 0-based
      camera (c1 -> 0).

    Raises:
      DatasetFormatError: the name does not follow the convention or the camera is not 1..6.
    """
    match = _NAME.match(name)
    if match is None:
        raise DatasetFormatError(
            path or name,
            "file name does not match '<id>_c<camera>s<sequence>_<frame>_<box>.jpg'",
            field="name",
        )
    person_id, camera = int(match.group(1)), int(match.group(2))
    if not 1 <= camera <= NUM_CAMERAS or person_id < -1:
        raise DatasetFormatError(
            path or name,
            f"camera {camera} not in 1..{NUM_CAMERAS} or person id {person_id} < -1",
            field="name",
        )
    return person_id, camera - 1


def load_market1501(root: str | os.PathLike) -> list[CameraImage]:
    """Reads Market-1501 (12,936 train, 3,368 query, 19,732 gallery images on the release).

    Args:
      root: the `Market-1501-v15.09.15` folder (or its parent).

    Returns:
      Train, then query, then gallery records (sorted by file name within a split); junk
      gallery images have person_id -1, distractors person_id 0. Junk and distractor files in
      `bounding_box_train/` or `query/` are skipped (logged with their count).

    Raises:
      DatasetFormatError: a split folder is missing or a `.jpg` name is malformed.
    """
    root = _folders.resolve_root(os.fspath(root), SPLIT_FOLDERS["train"], RELEASE_NAMES)
    return _folders.scan_split_folders(
        root, SPLIT_FOLDERS, parse_market_name, gallery_only_ids=GALLERY_ONLY_IDS
    )
