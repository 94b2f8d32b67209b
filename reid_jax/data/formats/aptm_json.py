"""APTM fine-tuning JSONs (`cuhk_train`, `icfg_test`, `rstp_val`, ...) -> records (aptm §1.2).

* Training files: a JSON list with one object per (image, caption) pair: `image` (path relative
  to the image root), `caption` (str), `image_id` (the person id, stored as int or str; kept as a
  string in `CaptionPair.image_id`, integerised downstream in first-appearance order).
* Test/val files: one object per image: `image`, `caption` (a **list** of sentences, normally 2)
  and `image_id` (the person id, an int). Queries are all captions flattened in file order; the
  ICFG test file is read with only its first caption per image (`first_caption_only=True`).

The image root differs between the reference configs (CUHK root vs its `imgs/` folder); it is an
explicit argument here, and `check_images` verifies it against the JSON paths.
"""

from __future__ import annotations

import os

from reid_jax.data.formats import _files, _json
from reid_jax.data.records import CaptionedImage, CaptionPair

SPLITS = ("train", "val", "test")


def load_aptm_train(
    json_path: str | os.PathLike, image_root: str | os.PathLike, *, check_images: bool = True
) -> list[CaptionPair]:
    """Reads an APTM fine-tuning training file.

    Args:
      json_path: e.g. `cuhk_train.json`.
      image_root: folder the `image` paths are relative to.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CaptionPair` per element in file order; `image_id` is the person id as a string,
      `label` is None.

    Raises:
      DatasetFormatError: invalid JSON, missing or mistyped field, empty caption, missing image.
    """
    json_path, image_root = os.fspath(json_path), os.path.abspath(image_root)
    entries = _json.load_json(json_path, list)
    pairs = []
    for index, entry in enumerate(entries):
        rel_path = _json.get_str(entry, "image", path=json_path, index=index)
        caption = _json.get_str(entry, "caption", path=json_path, index=index)
        image_id = _json.get_id_str(entry, "image_id", path=json_path, index=index)
        image_path = _files.resolve_image(
            image_root,
            rel_path,
            source=json_path,
            record=index,
            field="image",
            check_exists=check_images,
        )
        pairs.append(
            CaptionPair(image_path=image_path, caption=caption, image_id=image_id, label=None)
        )
    return pairs


def load_aptm_test(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    first_caption_only: bool = False,
    split: str = "test",
    check_images: bool = True,
) -> list[CaptionedImage]:
    """Reads an APTM fine-tuning test or val file (one element per gallery image).

    Args:
      json_path: e.g. `cuhk_test.json`, `rstp_val.json`, `icfg_test.json`.
      image_root: folder the `image` paths are relative to.
      first_caption_only: keep only `caption[0]` of each image (the ICFG test protocol).
      split: split written into the records ('test' or 'val').
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `CaptionedImage` per element in file order (gallery order; queries are the captions
      flattened in this order), `person_id` = `image_id`, `tokens=None`.

    Raises:
      DatasetFormatError: invalid JSON, missing or mistyped field (`caption` must be a list),
        empty caption, missing image.
    """
    json_path, image_root = os.fspath(json_path), os.path.abspath(image_root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entries = _json.load_json(json_path, list)
    records = []
    for index, entry in enumerate(entries):
        rel_path = _json.get_str(entry, "image", path=json_path, index=index)
        captions = _json.get_captions(entry, "caption", path=json_path, index=index)
        person_id = _json.get_int(
            entry, "image_id", path=json_path, index=index, allow_digit_str=True
        )
        if first_caption_only:
            captions = captions[:1]
        image_path = _files.resolve_image(
            image_root,
            rel_path,
            source=json_path,
            record=index,
            field="image",
            check_exists=check_images,
        )
        records.append(
            CaptionedImage(
                image_path=image_path,
                person_id=person_id,
                captions=captions,
                tokens=None,
                split=split,
            )
        )
    return records
