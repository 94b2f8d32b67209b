"""ICFG-PEDES reader: `ICFG-PEDES.json` (or `ICFG_PEDES.json`) -> `CaptionedImage` (ssan §1.1).

Same schema as CUHK-PEDES `reid_raw.json`, with identities already **0-based** (train 0..3101),
one caption per image and only 'train'/'test' splits (any other split value is an error). The
`imgs/train` and `imgs/test` folders are inherited from MSMT17 and do not define the split; only
the `split` field does. The release repeats one image path in train; it is kept (logged), as the
references keep it.
"""

from __future__ import annotations

import os

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _json, _pedes
from reid_jax.data.records import CaptionedImage

# The SSAN script's default name first; the README spells it with an underscore.
ANNOTATION_FILES = ("ICFG-PEDES.json", "ICFG_PEDES.json")
IMAGE_FOLDER = "imgs"


def _icfg_split(split: str, warnings: _files.WarningCounter) -> str | None:
    del warnings
    return split if split in ("train", "test") else None


SCHEMA = _pedes.CaptionSchema(
    id_field="id",
    path_field="file_path",
    captions_field="captions",
    split_field="split",
    tokens_field="processed_tokens",
    usual_captions=1,
    normalise_split=_icfg_split,
)


def find_annotation_file(root: str) -> str:
    """Returns the path of the ICFG annotation JSON under `root` (either spelling)."""
    for name in ANNOTATION_FILES:
        candidate = os.path.join(root, name)
        if os.path.isfile(candidate):
            return candidate
    raise DatasetFormatError(
        os.path.join(root, ANNOTATION_FILES[0]),
        f"not found (also looked for {ANNOTATION_FILES[1]})",
    )


def load_icfg_pedes(root: str | os.PathLike, *, check_images: bool = True) -> list[CaptionedImage]:
    """Reads ICFG-PEDES in file order.

    Args:
      root: dataset folder holding `ICFG-PEDES.json` or `ICFG_PEDES.json` and `imgs/`.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CaptionedImage` per JSON object (54,522 on the full release): 0-based `person_id`,
      one caption with its `processed_tokens`, split 'train' or 'test'.

    Raises:
      DatasetFormatError: missing/invalid JSON, missing or mistyped field, empty caption,
        unknown split, missing image.
    """
    root = os.path.abspath(os.fspath(root))
    json_path = find_annotation_file(root)
    entries = _json.load_json(json_path, list)
    return _pedes.parse_captioned_images(
        entries,
        SCHEMA,
        json_path=json_path,
        image_dir=os.path.join(root, IMAGE_FOLDER),
        check_images=check_images,
    )
