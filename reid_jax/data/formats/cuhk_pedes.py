"""CUHK-PEDES reader: `reid_raw.json` -> `CaptionedImage` records (ssan §1.1-1.3).

Layout: `root/reid_raw.json` (a JSON list, one object per image with `split`, `id`, `file_path`,
`captions`, `processed_tokens`) and `root/imgs/<file_path>`. Identities are **1-based** and kept
as stored (the SSAN relabelling that drops ids 1369/4116/6116 is a separate step). The split is
lower-cased and must be 'train', 'val' or 'test'. The SSAN script treats any other value as
'val' (ssan §1.1); here it is an error naming the record, since the release has no other value
and a typo would otherwise move images out of training silently.
"""

from __future__ import annotations

import os

from reid_jax.data.formats import _files, _json, _pedes
from reid_jax.data.records import CaptionedImage

ANNOTATION_FILE = "reid_raw.json"
IMAGE_FOLDER = "imgs"


def _cuhk_split(split: str, warnings: _files.WarningCounter) -> str | None:
    del warnings
    return split if split in ("train", "test", "val") else None


SCHEMA = _pedes.CaptionSchema(
    id_field="id",
    path_field="file_path",
    captions_field="captions",
    split_field="split",
    tokens_field="processed_tokens",
    usual_captions=2,
    normalise_split=_cuhk_split,
)


def load_cuhk_pedes(root: str | os.PathLike, *, check_images: bool = True) -> list[CaptionedImage]:
    """Reads CUHK-PEDES (`reid_raw.json`) in file order.

    Args:
      root: dataset folder holding `reid_raw.json` and `imgs/`.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CaptionedImage` per JSON object (40,206 on the full release): 1-based `person_id`,
      captions and their `processed_tokens`, split in {'train', 'val', 'test'}.

    Raises:
      DatasetFormatError: unreadable/invalid JSON, missing or mistyped field, empty caption,
        unknown split, token lists not aligned with the captions, image path leaving `imgs/`,
        missing image.
    """
    root = os.path.abspath(os.fspath(root))
    json_path = os.path.join(root, ANNOTATION_FILE)
    entries = _json.load_json(json_path, list)
    return _pedes.parse_captioned_images(
        entries,
        SCHEMA,
        json_path=json_path,
        image_dir=os.path.join(root, IMAGE_FOLDER),
        check_images=check_images,
    )
