"""Shared scanner for image-to-image re-id datasets stored as split folders of named JPEGs."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping

from reid_jax.data.formats import _files
from reid_jax.data.records import CameraImage

IMAGE_SUFFIX = ".jpg"


def resolve_root(root: str, marker: str, release_names: tuple[str, ...]) -> str:
    """Returns `root` if it holds `marker`, else the first `root/<release_name>` that does.

    Lets callers pass either the dataset folder or its parent (e.g. the folder holding
    `Market-1501-v15.09.15/`). Falls back to `root`, so missing folders are reported there.
    """
    root = os.path.abspath(root)
    if os.path.isdir(os.path.join(root, marker)):
        return root
    for name in release_names:
        if os.path.isdir(os.path.join(root, name, marker)):
            return os.path.join(root, name)
    return root


def scan_split_folders(
    root: str,
    folders: Mapping[str, str],
    parse_name: Callable[[str, str], tuple[int, int]],
    *,
    gallery_only_ids: Collection[int] = (),
) -> list[CameraImage]:
    """Lists every `.jpg` of each split folder (sorted by name) and parses its file name.

    Non-JPEG files (e.g. `Thumbs.db` in some Market copies) are skipped and logged with their
    count. So are images whose id is in `gallery_only_ids` outside the 'gallery' split: junk
    (-1) and distractors (0000) are gallery material only (alignedreid §1.3, §7.3); in
    `bounding_box_train/` they would become an identity class, in `query/` a query whose
    "matches" are other people.

    Args:
      root: dataset folder.
      folders: split name ('train', 'query', 'gallery') -> folder name under `root`.
      parse_name: (file name, full path for errors) -> (person_id, 0-based camera_id); raises
        `DatasetFormatError` on a name that does not follow the convention.
      gallery_only_ids: ids that are not identities (e.g. {-1, 0} for Market-1501).

    Returns:
      Records grouped by split in `folders` order, sorted by file name inside a split.
    """
    warnings = _files.WarningCounter()
    records = []
    for split, folder in folders.items():
        directory = _files.require_dir(os.path.join(root, folder), f"{split} images")
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not name.lower().endswith(IMAGE_SUFFIX) or not os.path.isfile(path):
                warnings.add("non-JPEG entries skipped", path)
                continue
            person_id, camera_id = parse_name(name, path)
            if split != "gallery" and person_id in gallery_only_ids:
                warnings.add(
                    f"junk/distractor images (id {person_id}) skipped outside the gallery", path
                )
                continue
            records.append(
                CameraImage(image_path=path, person_id=person_id, camera_id=camera_id, split=split)
            )
    warnings.flush(root)
    return records
