"""PA-100K attribute annotations: `annotation.mat` or APTM's `PA100K_{split}.json` (aptm §1.2).

`annotation.mat` (alignedreid §1.4, attribute_reid §2.4) holds `attributes` (26 x 1 cell of
names), and for each split in train/val/test (80,000 / 10,000 / 10,000) `<split>_images_name`
(n x 1 cell of file names) and `<split>_label` (n x 26, 0/1). The attribute names in the file
must equal `PA100K_ATTRIBUTE_NAMES` (the column order the APTM prompts assume). Images live in
`release_data/release_data/`; the image folder is looked up as documented in `find_image_root`.
"""

from __future__ import annotations

import os

import numpy as np

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _json, _mat
from reid_jax.data.records import AttributeRecord

PA100K_ATTRIBUTE_NAMES: tuple[str, ...] = (
    "Female",
    "AgeOver60",
    "Age18-60",
    "AgeLess18",
    "Front",
    "Side",
    "Back",
    "Hat",
    "Glasses",
    "HandBag",
    "ShoulderBag",
    "Backpack",
    "HoldObjectsInFront",
    "ShortSleeve",
    "LongSleeve",
    "UpperStride",
    "UpperLogo",
    "UpperPlaid",
    "UpperSplice",
    "LowerStripe",
    "LowerPattern",
    "LongCoat",
    "Trousers",
    "Shorts",
    "Skirt&Dress",
    "boots",
)
SPLITS = ("train", "val", "test")
ANNOTATION_CANDIDATES = ("annotation.mat", os.path.join("annotation", "annotation.mat"))
IMAGE_ROOT_CANDIDATES = (
    os.path.join("release_data", "release_data"),
    "release_data",
    os.path.join("data", "release_data", "release_data"),
    "data",
)


def find_annotation_file(root_or_mat_path: str) -> str:
    """Returns the .mat path: the argument itself if it is a file, else the first of
    `ANNOTATION_CANDIDATES` under it."""
    return _files.find_file(root_or_mat_path, ANNOTATION_CANDIDATES, "PA-100K annotation file")


def find_image_root(dataset_root: str) -> str:
    """Returns the first existing folder of `IMAGE_ROOT_CANDIDATES` under `dataset_root`, else
    `dataset_root` itself."""
    for name in IMAGE_ROOT_CANDIDATES:
        candidate = os.path.join(dataset_root, name)
        if os.path.isdir(candidate):
            return candidate
    return dataset_root


def load_pa100k(
    root_or_mat_path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
) -> list[AttributeRecord]:
    """Reads PA-100K `annotation.mat` (train, then val, then test).

    Args:
      root_or_mat_path: the dataset folder or the `annotation.mat` file itself.
      image_root: image folder; default `find_image_root` of the dataset folder (the folder of
        the .mat file, or its parent when the file sits in `annotation/`).
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `AttributeRecord` per image: `key` = absolute image path, `labels` = 26 ints in {0, 1}
      in `PA100K_ATTRIBUTE_NAMES` order, `split` in {'train', 'val', 'test'}.

    Raises:
      DatasetFormatError: malformed file, missing field, attribute names differing from the
        standard order, label shape/value errors, missing image.
    """
    mat_path = find_annotation_file(os.fspath(root_or_mat_path))
    mat = _mat.load_mat(mat_path)
    names = _mat.cell_strings(
        _mat.get_field(mat, "attributes", path=mat_path), path=mat_path, field="attributes"
    )
    if tuple(names) != PA100K_ATTRIBUTE_NAMES:
        raise DatasetFormatError(
            mat_path,
            f"attribute names {names} differ from the standard "
            f"PA-100K order {list(PA100K_ATTRIBUTE_NAMES)}",
            field="attributes",
        )
    if image_root is None:
        dataset_root = os.path.dirname(os.path.abspath(mat_path))
        if os.path.basename(dataset_root) == "annotation":
            dataset_root = os.path.dirname(dataset_root)
        image_root = find_image_root(dataset_root)
    image_root = os.path.abspath(image_root)
    records = []
    for split in SPLITS:
        name_field, label_field = f"{split}_images_name", f"{split}_label"
        files = _mat.cell_strings(
            _mat.get_field(mat, name_field, path=mat_path), path=mat_path, field=name_field
        )
        labels = _mat.integer_array(
            _mat.get_field(mat, label_field, path=mat_path), path=mat_path, field=label_field
        )
        if labels.shape != (len(files), len(names)):
            raise DatasetFormatError(
                mat_path,
                f"shape {labels.shape}, expected ({len(files)}, {len(names)})",
                field=label_field,
            )
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DatasetFormatError(
                mat_path,
                f"label {labels[i, j]} not in {{0, 1}}",
                record=f"{split} image {files[i]}",
                field=names[j],
            )
        for i, (file_name, row) in enumerate(zip(files, labels.tolist(), strict=True)):
            image_path = _files.resolve_image(
                image_root,
                file_name,
                source=mat_path,
                record=f"{split} {i}",
                field=name_field,
                check_exists=check_images,
            )
            records.append(
                AttributeRecord(
                    key=image_path, labels=tuple(row), names=PA100K_ATTRIBUTE_NAMES, split=split
                )
            )
    return records


def load_pa100k_json(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    *,
    check_images: bool = True,
) -> list[AttributeRecord]:
    """Reads an APTM `PA100K_{train,val,test}.json` list of `{image, label}`.

    Args:
      json_path: the JSON file.
      image_root: folder the `image` paths are relative to.
      split: 'train', 'val' or 'test' (the file does not store it).
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Returns:
      One `AttributeRecord` per element: `key` = absolute image path, 26 labels in {0, 1}.

    Raises:
      DatasetFormatError: invalid JSON, missing/mistyped field, labels not 26 ints in {0, 1},
        missing image.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    json_path, image_root = os.fspath(json_path), os.path.abspath(image_root)
    entries = _json.load_json(json_path, list)
    records = []
    for index, entry in enumerate(entries):
        rel_path = _json.get_str(entry, "image", path=json_path, index=index)
        labels = _json.get_int_labels(
            entry,
            "label",
            path=json_path,
            index=index,
            length=len(PA100K_ATTRIBUTE_NAMES),
            allowed=(0, 1),
        )
        image_path = _files.resolve_image(
            image_root,
            rel_path,
            source=json_path,
            record=index,
            field="image",
            check_exists=check_images,
        )
        records.append(
            AttributeRecord(
                key=image_path, labels=labels, names=PA100K_ATTRIBUTE_NAMES, split=split
            )
        )
    return records
