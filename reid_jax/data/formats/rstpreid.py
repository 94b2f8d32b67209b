"""RSTPReid reader: `data_captions.json` -> `CaptionedImage` records (aptm §1.3).

Layout: `root/data_captions.json`, a JSON list of `{id, img_path, captions, split}` (one object
per image, normally 2 captions; 5 images per identity), images under `root/imgs/<img_path>`.
Splits are 'train', 'val', 'test' (any other value is an error). The file carries no
pre-tokenised captions, so `tokens` is None. Identities are kept as stored.
"""

from __future__ import annotations

import os

from reid_jax.data.formats import _files, _json, _pedes
from reid_jax.data.records import CaptionedImage

ANNOTATION_FILE = "data_captions.json"
IMAGE_FOLDER = "imgs"


def _rstp_split(split: str, warnings: _files.WarningCounter) -> str | None:
    del warnings
    return split if split in ("train", "val", "test") else None


SCHEMA = _pedes.CaptionSchema(
    id_field="id",
    path_field="img_path",
    captions_field="captions",
    split_field="split",
    tokens_field=None,
    usual_captions=2,
    normalise_split=_rstp_split,
)


def load_rstpreid(root: str | os.PathLike, *, check_images: bool = True) -> list[CaptionedImage]:
    """Reads RSTPReid in file order.

    Args:
      root: dataset folder holding `data_captions.json` and `imgs/`.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CaptionedImage` per JSON object (20,505 on the full release), `tokens=None`.

    Raises:
      DatasetFormatError: missing/invalid JSON, missing or mistyped field, empty caption,
        unknown split, missing image.
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
