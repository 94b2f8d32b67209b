"""PETA attribute annotations: the DeepMAR release's `PETA.mat` (attribute_reid §2.3).

One struct `peta` with
- `data`: 19,000 x 110 numbers; columns 0-4 are metadata, columns 5-109 the 105 binary
  attributes (0/1) of image i, whose file is `images/{i + 1:05d}.png`;
- `attribute`: 105 x 1 cell of attribute names (the order of those columns);
- `selected_attribute`: the 35 attributes of the standard recognition benchmark, 1-based
  indices into `attribute`;
- `partition_attribute` (the release spells it `partion_attribute`; both are read): a cell of
  5 random partitions, each a 1 x 1 struct with `train`, `val` and `test` vectors of 1-based
  image indices (commonly 9,500 / 1,900 / 7,600).

Labels are image-level. Unlike some follow-up code, the attribute columns start at column 5:
column 4 is metadata (the quirk of attribute_reid §4.3 is not reproduced).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _mat
from reid_jax.data.records import AttributeRecord

STRUCT = "peta"
METADATA_COLUMNS = 5
PARTITION_FIELDS = ("partition_attribute", "partion_attribute")
PARTITION_SPLITS = ("train", "val", "test")
ANNOTATION_CANDIDATES = ("PETA.mat", os.path.join("PETA dataset", "PETA.mat"))
IMAGE_FOLDER = "images"


@dataclasses.dataclass(frozen=True)
class PetaAnnotations:
    """The contents of `PETA.mat`.

    Attributes:
      records: one `AttributeRecord` per image, in file order: `key` = absolute image path,
        `labels` = the 105 binary labels, `split` = 'all' (partitions are separate).
      attribute_names: the 105 names.
      selected: [35] int64 0-based indices into `attribute_names`.
      partitions: one dict per partition, split name -> int64 0-based image indices.
    """

    records: tuple[AttributeRecord, ...]
    attribute_names: tuple[str, ...]
    selected: np.ndarray
    partitions: tuple[dict[str, np.ndarray], ...]

    def labels(self) -> np.ndarray:
        """[N, 105] int64 labels of every image."""
        return np.asarray([r.labels for r in self.records], np.int64)


def find_annotation_file(root_or_mat_path: str) -> str:
    """Returns the .mat path: the argument itself if it is a file, else the first of
    `ANNOTATION_CANDIDATES` under it."""
    return _files.find_file(root_or_mat_path, ANNOTATION_CANDIDATES, "PETA annotation file")


def load_peta(
    root_or_mat_path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
) -> PetaAnnotations:
    """Reads `PETA.mat`.

    Args:
      root_or_mat_path: the dataset folder or the .mat file.
      image_root: the image folder; default `images/` next to the .mat file.
      check_images: stat every image; a missing one raises `DatasetFormatError`.

    Raises:
      DatasetFormatError: missing struct or field, wrong shapes, labels outside {0, 1},
        indices out of range, missing image; the message names the file and the field.
    """
    path = find_annotation_file(os.fspath(root_or_mat_path))
    peta = _mat.get_field(_mat.load_mat(path), STRUCT, path=path)
    names = _mat.cell_strings(
        _mat.get_field(peta, "attribute", path=path), path=path, field="attribute"
    )
    data = _mat.integer_array(_mat.get_field(peta, "data", path=path), path=path, field="data")
    if data.ndim != 2 or data.shape[1] != METADATA_COLUMNS + len(names):
        raise DatasetFormatError(
            path,
            f"shape {data.shape}, expected (N, {METADATA_COLUMNS} + {len(names)} attributes)",
            field="data",
        )
    labels = data[:, METADATA_COLUMNS:]
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DatasetFormatError(
            path, f"label {labels[i, j]} not in {{0, 1}}", record=f"image {i + 1}", field=names[j]
        )
    selected = _one_based(
        _mat.get_field(peta, "selected_attribute", path=path),
        len(names),
        path=path,
        field="selected_attribute",
    )
    partitions = _partitions(peta, len(data), path)

    image_root = os.path.abspath(
        image_root if image_root is not None else os.path.join(os.path.dirname(path), IMAGE_FOLDER)
    )
    records = []
    for i, row in enumerate(labels.tolist()):
        image_path = os.path.join(image_root, f"{i + 1:05d}.png")
        if check_images:
            _files.check_image(image_path, source=path, record=f"image {i + 1}", field="data")
        records.append(
            AttributeRecord(key=image_path, labels=tuple(row), names=tuple(names), split="all")
        )
    return PetaAnnotations(tuple(records), tuple(names), selected, partitions)


def _one_based(value, size: int, *, path: str, field: str, record: str | None = None) -> np.ndarray:
    """A vector of 1-based indices in [1, size] -> 0-based int64."""
    indices = _mat.integer_array(value, path=path, field=field, record=record)
    if indices.ndim > 2 or (indices.ndim == 2 and min(indices.shape) > 1):
        raise DatasetFormatError(
            path, f"expected a vector, got shape {indices.shape}", record=record, field=field
        )
    indices = indices.ravel()
    if indices.size and (indices.min() < 1 or indices.max() > size):
        raise DatasetFormatError(
            path,
            f"index out of range [1, {size}]: {indices[(indices < 1) | (indices > size)][0]}",
            record=record,
            field=field,
        )
    return indices - 1


def _partitions(peta, num_images: int, path: str) -> tuple[dict[str, np.ndarray], ...]:
    present = [f for f in PARTITION_FIELDS if f in _mat.struct_field_names(peta)]
    if not present:
        raise DatasetFormatError(path, "missing struct field", field=PARTITION_FIELDS[0])
    field = present[0]
    cells = np.asarray(_mat.get_field(peta, field, path=path))
    if cells.dtype != object or cells.size == 0:
        raise DatasetFormatError(path, "expected a cell array of partition structs", field=field)
    partitions = []
    for k, cell in enumerate(cells.ravel()):
        record = f"partition {k + 1}"
        partition = {
            split: _one_based(
                _mat.get_field(cell, split, path=path, record=record),
                num_images,
                path=path,
                field=f"{field}.{split}",
                record=record,
            )
            for split in PARTITION_SPLITS
        }
        partitions.append(partition)
    return tuple(partitions)
