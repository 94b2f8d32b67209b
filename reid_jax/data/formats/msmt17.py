"""MSMT17 reader: `list_{train,val,query,gallery}.txt` + image folders.

Assumed layout (the V1 release as read by torchreid / reid-strong-baseline; not verified
against a spec file):

* `root/list_train.txt`, `list_val.txt`, `list_query.txt`, `list_gallery.txt`; one
  `<relative path> <label>` line per image, e.g. `0000/0000_000_01_0303morning_0015_0.jpg 0`.
  The label is the person id used as is (train ids 0..1040, test ids 0..3059; val lines are
  further images of the train identities); it must equal the id the file name starts with.
  Paths must stay inside their image folder (no absolute path, no `..`).
* Paths of the train/val lists are relative to `train/`, query/gallery paths to `test/`
  (`mask_train_v2/` and `mask_test_v2/` in the V2 release; whichever exists is used).
* File names are `PPPP_SSS_CC_<date><time-of-day>_FFFF_X.jpg`: person id, running index,
  **2-digit camera 01..15** (third underscore field), capture date and period, frame, box.
  camera_id = CC - 1.

The official training set (32,621 images) is list_train (30,248) + list_val (2,373); they are
both returned as 'train' unless `include_val=False` (torchreid's default, 30,248 images).
"""

from __future__ import annotations

import os
import re

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files
from reid_jax.data.records import CameraImage

NUM_CAMERAS = 15
TRAIN_DIRS = ("train", "mask_train_v2")
TEST_DIRS = ("test", "mask_test_v2")
RELEASE_NAMES = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
# ASCII digits only: `\d` would also take e.g. Arabic-Indic digits, which int() then accepts.
# At most 18 id digits, so an id always fits int64.
_NAME = re.compile(r"^([0-9]{1,18})_([0-9]+)_([0-9]+)_")
_LABEL = re.compile(r"[0-9]{1,18}")


def _first_dir(root: str, names: tuple[str, ...]) -> str:
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise DatasetFormatError(
        os.path.join(root, names[0]), f"missing image folder (looked for {', '.join(names)})"
    )


def parse_image_name(name: str, *, source: str, record: str) -> tuple[int, int]:
    """Returns (person id, 0-based camera) of an MSMT17 image path `.../PPPP_SSS_CC_...`.

    Raises:
      DatasetFormatError: the base name does not start with `PPPP_SSS_CC_` or CC is not 1..15.
    """
    match = _NAME.match(os.path.basename(name))
    if match is None or not 1 <= int(match.group(3)) <= NUM_CAMERAS:
        raise DatasetFormatError(
            source,
            f"image name {name!r:.200} does not match 'PPPP_SSS_CC_...' with camera CC in 01..15",
            record=record,
            field="path",
        )
    return int(match.group(1)), int(match.group(3)) - 1


def read_list(
    list_path: str, image_dir: str, split: str, *, check_images: bool
) -> list[CameraImage]:
    """Parses one `<path> <label>` list file.

    Args:
      list_path: e.g. `root/list_query.txt`.
      image_dir: folder the listed paths are relative to.
      split: split written into the records.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CameraImage` per non-blank line, in file order.

    Raises:
      DatasetFormatError: unreadable or non-UTF-8 file, a line that is not `<path> <label>`, a
        label that is not a non-negative integer or disagrees with the file name's identity, a
        malformed name or camera, a path leaving `image_dir`, a missing image; names the file,
        the line and the field.
    """
    try:
        with open(list_path, "rb") as f:
            # Only "\n" ends a line (str.splitlines would also split on e.g. U+2028, so the line
            # numbers in errors would not match an editor's).
            lines = f.read().decode("utf-8").split("\n")
    except OSError as e:
        raise DatasetFormatError(list_path, f"cannot read list file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DatasetFormatError(list_path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = f"line {number}"
        parts = line.split()
        if len(parts) != 2:
            raise DatasetFormatError(
                list_path,
                f"expected '<path> <label>', got {line!r:.200}",
                record=record,
                field="line",
            )
        rel_path, label = parts
        if not _LABEL.fullmatch(label):
            raise DatasetFormatError(
                list_path,
                f"label {label!r:.60} is not a non-negative integer (at most 18 digits)",
                record=record,
                field="label",
            )
        name_id, camera_id = parse_image_name(rel_path, source=list_path, record=record)
        if int(label) != name_id:
            # The label is the identity the file name starts with; a mismatch is an edited or
            # shifted list, and trusting either side would train on a wrong class.
            raise DatasetFormatError(
                list_path,
                f"label {label} disagrees with the identity {name_id} of {rel_path!r:.200}",
                record=record,
                field="label",
            )
        image_path = _files.resolve_image(
            image_dir,
            rel_path,
            source=list_path,
            record=record,
            field="path",
            check_exists=check_images,
        )
        records.append(
            CameraImage(
                image_path=image_path, person_id=int(label), camera_id=camera_id, split=split
            )
        )
    return records


def load_msmt17(
    root: str | os.PathLike, *, include_val: bool = True, check_images: bool = True
) -> list[CameraImage]:
    """Reads MSMT17 (V1 or V2 layout, see the module docstring).

    Args:
      root: the `MSMT17_V1` / `MSMT17_V2` folder (or its parent).
      include_val: add list_val images to 'train' (the official 32,621-image training set).
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      Train (list_train then list_val), query, gallery records in list order.

    Raises:
      DatasetFormatError: missing list file or image folder, malformed line, bad camera field,
        label disagreeing with the file name, path leaving the image folder, missing image.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isfile(os.path.join(root, "list_train.txt")):
        for name in RELEASE_NAMES:
            if os.path.isfile(os.path.join(root, name, "list_train.txt")):
                root = os.path.join(root, name)
                break
    train_dir, test_dir = _first_dir(root, TRAIN_DIRS), _first_dir(root, TEST_DIRS)
    lists = [("list_train.txt", train_dir, "train")]
    if include_val:
        lists.append(("list_val.txt", train_dir, "train"))
    lists += [("list_query.txt", test_dir, "query"), ("list_gallery.txt", test_dir, "gallery")]
    records = []
    for list_name, image_dir, split in lists:
        records += read_list(
            os.path.join(root, list_name), image_dir, split, check_images=check_images
        )
    return records
