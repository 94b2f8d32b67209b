"""MALS pre-training annotations -> `CaptionPair` records (aptm §1.1, §2.2).

MALS ships 91 JSON lists (`4x`, `c_g_a`, `c_g_a_0..43`, `i_g_a`, `i_g_a_0..43`), each holding one
object per image-caption pair: `image` (path relative to the MALS image root, e.g.
`gene_crop/c_g_a_0/0.jpg`), `caption` (one sentence), `image_id` (unique per pair, e.g.
`c_g_a_0_0`) and `label` (27 ints: 1, 0 or -1 = not mentioned; attribute order of aptm §2.2).
The files are concatenated in the order given; the integer ids used by the losses (first
appearance order) are assigned downstream.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _json
from reid_jax.data.records import CaptionPair

NUM_ATTRIBUTES = 27
LABEL_VALUES = frozenset({1, 0, -1})
# The 91 annotation subsets in the reference order (aptm §1.1); file `g_<subset>_attrs.json`.
MALS_SUBSETS = ("4x", "c_g_a", *(f"c_g_a_{i}" for i in range(44)), "i_g_a") + tuple(
    f"i_g_a_{i}" for i in range(44)
)
ANNOTATION_FOLDER = "gene_attrs"


def mals_annotation_files(folder: str | os.PathLike, *, allow_missing: bool = False) -> list[str]:
    """The MALS annotation files of `folder` (gene_attrs/) in the reference order (aptm §1.1).

    Args:
      folder: the folder of the `g_<subset>_attrs.json` files.
      allow_missing: return the files that exist (at least one) instead of requiring all 91,
        e.g. for a subset of MALS or the embedded dataset's part.

    Returns:
      file paths, in the order 4x, c_g_a, c_g_a_0..43, i_g_a, i_g_a_0..43.

    Raises:
      DatasetFormatError: naming the first missing file (or the folder, if none exists).
    """
    files = [os.path.join(os.fspath(folder), f"g_{name}_attrs.json") for name in MALS_SUBSETS]
    present = [path for path in files if os.path.isfile(path)]
    if not present:
        raise DatasetFormatError(os.fspath(folder), "no MALS annotation file g_<subset>_attrs.json")
    if not allow_missing and len(present) < len(files):
        missing = next(path for path in files if not os.path.isfile(path))
        raise DatasetFormatError(missing, "MALS annotation file is missing", field="train_files")
    return present


def parse_mals_file(json_path: str, image_root: str, *, check_images: bool) -> list[CaptionPair]:
    """Reads one MALS JSON list.

    Args:
      json_path: one annotation file.
      image_root: folder the `image` paths are relative to.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CaptionPair` per element, in file order, `label` a 27-tuple in {1, 0, -1}.
    """
    entries = _json.load_json(json_path, list)
    pairs = []
    for index, entry in enumerate(entries):
        rel_path = _json.get_str(entry, "image", path=json_path, index=index)
        caption = _json.get_str(entry, "caption", path=json_path, index=index)
        image_id = _json.get_id_str(entry, "image_id", path=json_path, index=index)
        label = _json.get_int_labels(
            entry, "label", path=json_path, index=index, length=NUM_ATTRIBUTES, allowed=LABEL_VALUES
        )
        image_path = _files.resolve_image(
            image_root,
            rel_path,
            source=json_path,
            record=index,
            field="image",
            check_exists=check_images,
        )
        pairs.append(
            CaptionPair(image_path=image_path, caption=caption, image_id=image_id, label=label)
        )
    return pairs


def load_mals(
    annotation_files: Sequence[str | os.PathLike],
    image_root: str | os.PathLike,
    *,
    check_images: bool = True,
) -> list[CaptionPair]:
    """Reads and concatenates MALS annotation files in the given order.

    Args:
      annotation_files: the JSON lists, in the order of the pre-training config (aptm §1.1).
      image_root: MALS image root; `image` fields are joined to it.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      All `CaptionPair` records (1,510,330 on the full release).

    Raises:
      DatasetFormatError: invalid/truncated JSON, wrong top-level type, missing or mistyped
        field, empty caption, a label that is not 27 ints in {1, 0, -1}, missing image.
    """
    image_root = os.path.abspath(os.fspath(image_root))
    pairs: list[CaptionPair] = []
    for json_path in annotation_files:
        pairs.extend(parse_mals_file(os.fspath(json_path), image_root, check_images=check_images))
    return pairs
