"""CUHK03 reader for the 767/700 ("new") protocol (alignedreid §1.3).

Protocol files `cuhk03_new_protocol_config_{detected,labeled}.mat` (MATLAB v5) hold `filelist`
(image names `A_PPP_V_II.png`: camera pair 1-5, person within the pair, view 1-2, image 01-10),
`labels` (global person id per file), `camId` (view 1/2 per file) and **1-based**
`train_idx` / `query_idx` / `gallery_idx` into `filelist`.

Images are read from `image_dir` (default `root/images_<variant>`, torchreid's layout), named
exactly as in `filelist`. Any that are missing are extracted from the raw release
`cuhk-03.mat` (MATLAB v7.3 = HDF5, read with h5py) when it is found under `root` or
`root/cuhk03_release`: its `detected`/`labeled` variables are 1 x 5 arrays of references (one
per camera pair) to (persons x 10) cell arrays of image references; HDF5 stores everything
transposed, so a cell array reads as (10, persons) and an image as (3, W, H). Columns 0-4 are
view 1, 5-9 view 2; empty cells (missing images) are stored as 2-element dimension vectors.
"""

from __future__ import annotations

import collections
import io
import os
import re

import h5py
import numpy as np
from PIL import Image

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _mat
from reid_jax.data.records import CameraImage

VARIANTS = ("detected", "labeled")
PROTOCOL_FILE = "cuhk03_new_protocol_config_{variant}.mat"
RAW_MAT_CANDIDATES = ("cuhk-03.mat", os.path.join("cuhk03_release", "cuhk-03.mat"))
SPLIT_INDEX_FIELDS = {"train": "train_idx", "query": "query_idx", "gallery": "gallery_idx"}
_NAME = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})\.png$", re.ASCII)


def _parse_name(name: str, *, source: str, record: int) -> tuple[int, int, int, int]:
    """Returns (pair, person, view, image) of `A_PPP_V_II.png`, all 1-based."""
    match = _NAME.match(name)
    if match is None:
        raise DatasetFormatError(
            source,
            f"name {name!r} does not match 'A_PPP_V_II.png'",
            record=record,
            field="filelist",
        )
    pair, person, view, image = (int(g) for g in match.groups())
    if not 1 <= image <= 10 or view != (1 if image <= 5 else 2):
        raise DatasetFormatError(
            source,
            f"name {name!r}: image index must be 01..10 and the view "
            "1 for images 01-05, 2 for 06-10",
            record=record,
            field="filelist",
        )
    return pair, person, view, image


def read_protocol(mat_path: str) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Reads and checks a new-protocol config file.

    Args:
      mat_path: `cuhk03_new_protocol_config_<variant>.mat`.

    Returns:
      (filelist [N] names, labels [N] int64 person ids, views [N] int64 in {1, 2},
      {split: [n] int64 0-based indices into filelist}).
    """
    mat = _mat.load_mat(mat_path)
    names = _mat.cell_strings(
        _mat.get_field(mat, "filelist", path=mat_path), path=mat_path, field="filelist"
    )
    n = len(names)
    labels = _mat.integer_array(
        _mat.get_field(mat, "labels", path=mat_path), path=mat_path, field="labels", length=n
    )
    views = _mat.integer_array(
        _mat.get_field(mat, "camId", path=mat_path), path=mat_path, field="camId", length=n
    )
    for i, name in enumerate(names):
        view = _parse_name(name, source=mat_path, record=i)[2]
        if views[i] != view:
            raise DatasetFormatError(
                mat_path,
                f"camId {views[i]} disagrees with the view of {name!r}",
                record=i,
                field="camId",
            )
    splits = {}
    for split, field in SPLIT_INDEX_FIELDS.items():
        value = _mat.get_field(mat, field, path=mat_path)
        idx = _mat.integer_array(value, path=mat_path, field=field, length=np.size(value))
        bad = (idx < 1) | (idx > n)
        if bad.any():
            raise DatasetFormatError(
                mat_path,
                f"index {idx[np.argmax(bad)]} outside 1..{n} (indices are 1-based)",
                record=int(np.argmax(bad)),
                field=field,
            )
        splits[split] = idx - 1
    return names, labels, views, splits


def extract_cuhk03_images(raw_mat_path: str, variant: str, names: list[str], image_dir: str) -> int:
    """Writes the named images from the v7.3 `cuhk-03.mat` into `image_dir` as PNG files.

    Args:
      raw_mat_path: the release's `cuhk-03.mat` (HDF5).
      variant: 'detected' or 'labeled'.
      names: file names `A_PPP_V_II.png` to extract.
      image_dir: output folder (created); each file is written atomically.

    Returns:
      The number of images written.

    Raises:
      DatasetFormatError: not an HDF5 file, missing variable, a name pointing outside the
        stored arrays or at an empty cell.
    """
    wanted = collections.defaultdict(list)
    for i, name in enumerate(names):
        pair, person, _, image = _parse_name(name, source=raw_mat_path, record=i)
        wanted[pair].append((name, person, image))
    try:
        f = h5py.File(raw_mat_path, "r")
    except OSError as e:
        raise DatasetFormatError(raw_mat_path, f"not a readable MATLAB v7.3/HDF5 file ({e})") from e
    written = 0
    with f:
        if variant not in f:
            raise DatasetFormatError(raw_mat_path, "missing variable", field=variant)
        pair_refs = np.asarray(f[variant]).ravel()
        for pair, items in sorted(wanted.items()):
            if pair > len(pair_refs):
                raise DatasetFormatError(
                    raw_mat_path,
                    f"camera pair {pair} not stored",
                    record=items[0][0],
                    field=variant,
                )
            cells = np.asarray(f[pair_refs[pair - 1]]).T  # (persons, 10) references
            for name, person, image in items:
                if person > cells.shape[0] or image > cells.shape[1]:
                    raise DatasetFormatError(
                        raw_mat_path,
                        f"cell ({person}, {image}) outside the stored {cells.shape} array",
                        record=name,
                        field=f"{variant}{{{pair}}}",
                    )
                pixels = np.asarray(f[cells[person - 1, image - 1]])
                if pixels.ndim != 3 or pixels.shape[0] != 3 or pixels.dtype != np.uint8:
                    raise DatasetFormatError(
                        raw_mat_path,
                        f"empty cell or not a uint8 RGB image (shape {pixels.shape})",
                        record=name,
                        field=f"{variant}{{{pair}}}",
                    )
                buffer = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(pixels.T)).save(buffer, format="PNG")
                _files.write_atomic(os.path.join(image_dir, name), buffer.getvalue())
                written += 1
    return written


def _find_raw_mat(root: str) -> str | None:
    for name in RAW_MAT_CANDIDATES:
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def load_cuhk03(
    root: str | os.PathLike,
    *,
    variant: str = "detected",
    image_dir: str | os.PathLike | None = None,
    check_images: bool = True,
) -> list[CameraImage]:
    """Reads CUHK03 under the 767/700 protocol, extracting images from `cuhk-03.mat` if needed.

    Args:
      root: folder holding the protocol .mat files (and optionally `cuhk-03.mat` or
        `cuhk03_release/cuhk-03.mat`).
      variant: 'detected' (the re-production's default) or 'labeled'.
      image_dir: folder of the images named by `filelist`; default `root/images_<variant>`.
        Missing images are extracted into it when `cuhk-03.mat` is available.
      check_images: raise if an image is still missing.

    Returns:
      Train, query, gallery records in protocol-index order: `person_id` = `labels`,
      `camera_id` = view - 1 (0 for images 01-05, 1 for 06-10). Sizes on the release:
      detected 7,365 / 1,400 / 5,332, labeled 7,368 / 1,400 / 5,328.

    Raises:
      DatasetFormatError: malformed protocol or raw file, bad index, missing image.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    root = os.path.abspath(os.fspath(root))
    protocol_path = os.path.join(root, PROTOCOL_FILE.format(variant=variant))
    names, labels, views, splits = read_protocol(protocol_path)
    image_dir = os.path.abspath(os.fspath(image_dir or os.path.join(root, f"images_{variant}")))
    used = sorted({int(i) for idx in splits.values() for i in idx})
    missing = [i for i in used if not os.path.isfile(os.path.join(image_dir, names[i]))]
    raw_mat = _find_raw_mat(root)
    if missing and raw_mat is not None:
        extract_cuhk03_images(raw_mat, variant, [names[i] for i in missing], image_dir)
    elif missing and check_images:
        raise DatasetFormatError(
            protocol_path,
            f"image {os.path.join(image_dir, names[missing[0]])} not found "
            f"({len(missing)} missing) and no cuhk-03.mat under {root} to extract them from",
            record=missing[0],
            field="filelist",
        )
    records = []
    for split, idx in splits.items():
        for i in idx.tolist():
            records.append(
                CameraImage(
                    image_path=os.path.join(image_dir, names[i]),
                    person_id=int(labels[i]),
                    camera_id=int(views[i]) - 1,
                    split=split,
                )
            )
    return records
