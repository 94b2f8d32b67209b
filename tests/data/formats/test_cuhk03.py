"""Tests for the CUHK03 767/700-protocol reader and the v7.3 `cuhk-03.mat` extraction."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.cuhk03 import load_cuhk03

from .conftest import truncate

# (pair, persons in the pair); cells listed in EMPTY are missing images (size-0 cells).
PAIRS = ((1, 3), (2, 2))
EMPTY = {(1, 2, 9), (2, 1, 4)}  # (pair, person, column 0..9)


def _images():
    """{(pair, person, column): uint8 [H, W, 3]} of the non-empty cells."""
    rng = np.random.default_rng(0)
    return {
        (a, p, c): rng.integers(0, 256, (6 + c % 3, 4, 3), dtype=np.uint8)
        for a, persons in PAIRS
        for p in range(1, persons + 1)
        for c in range(10)
        if (a, p, c) not in EMPTY
    }


def _write_raw_mat(path, images, variant="detected"):
    """Mimics MATLAB v7.3: 512-byte user block, `#refs#` group, transposed arrays."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        empty = refs.create_dataset("empty", data=np.array([0, 0], np.uint64))
        empty.attrs["MATLAB_empty"] = np.uint8(1)
        pair_refs = f.create_dataset(variant, shape=(1, len(PAIRS)), dtype=h5py.ref_dtype)
        for a, persons in PAIRS:
            cells = refs.create_dataset(f"pair{a}", shape=(10, persons), dtype=h5py.ref_dtype)
            for p in range(1, persons + 1):
                for c in range(10):
                    if (a, p, c) in EMPTY:
                        cells[c, p - 1] = empty.ref
                    else:
                        data = refs.create_dataset(f"img{a}_{p}_{c}", data=images[a, p, c].T)
                        cells[c, p - 1] = data.ref
            pair_refs[0, a - 1] = cells.ref
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018")


def _name(a, p, c):
    return f"{a}_{p:03d}_{1 if c < 5 else 2}_{c + 1:02d}.png"


def _protocol(images):
    keys = sorted(images)
    names = [_name(*k) for k in keys]
    labels = [k[1] + (0 if k[0] == 1 else PAIRS[0][1]) for k in keys]  # global person ids
    views = [1 if k[2] < 5 else 2 for k in keys]
    test_ids = {4, 5}
    train = [i for i, lab in enumerate(labels) if lab not in test_ids]
    query = [
        next(
            i
            for i, (lab, v) in enumerate(zip(labels, views, strict=True))
            if lab == t and v == view
        )
        for t in sorted(test_ids)
        for view in (1, 2)
    ]
    gallery = [i for i, lab in enumerate(labels) if lab in test_ids and i not in query]
    return {
        "filelist": np.array(names, dtype=object).reshape(-1, 1),
        "labels": np.array(labels, float).reshape(-1, 1),
        "camId": np.array(views, float).reshape(-1, 1),
        "train_idx": np.array(train, float).reshape(-1, 1) + 1,  # 1-based on disk
        "query_idx": np.array(query, float).reshape(-1, 1) + 1,
        "gallery_idx": np.array(gallery, float).reshape(-1, 1) + 1,
    }


@pytest.fixture
def cuhk03(tmp_path):
    images = _images()
    protocol = _protocol(images)
    scipy.io.savemat(tmp_path / "cuhk03_new_protocol_config_detected.mat", protocol)
    return tmp_path, images, protocol


def _expected(protocol, image_dir):
    names = [str(n) for n in protocol["filelist"].ravel()]
    out = []
    for split in ("train", "query", "gallery"):
        for i in protocol[f"{split}_idx"].ravel().astype(int):
            out.append(
                (
                    os.path.join(image_dir, names[i - 1]),
                    int(protocol["labels"][i - 1, 0]),
                    int(protocol["camId"][i - 1, 0]) - 1,
                    split,
                )
            )
    return out


def test_extracts_from_v73_mat_and_reads_protocol(cuhk03):
    root, images, protocol = cuhk03
    os.makedirs(root / "cuhk03_release")
    _write_raw_mat(root / "cuhk03_release" / "cuhk-03.mat", images)
    records = load_cuhk03(root)
    image_dir = os.path.join(os.path.abspath(root), "images_detected")
    assert [(r.image_path, r.person_id, r.camera_id, r.split) for r in records] == _expected(
        protocol, image_dir
    )
    for key in [(1, 1, 0), (1, 3, 7), (2, 2, 9)]:  # PNG pixels = the stored array, untransposed
        with Image.open(os.path.join(image_dir, _name(*key))) as im:
            np.testing.assert_array_equal(np.asarray(im), images[key])
    assert sorted(os.listdir(image_dir)) == sorted(_name(*k) for k in images)  # no temp files
    # A second call finds the images and does not need the raw file.
    os.remove(root / "cuhk03_release" / "cuhk-03.mat")
    assert load_cuhk03(root) == records


def test_reads_an_extracted_image_folder(cuhk03, tmp_path_factory):
    root, images, protocol = cuhk03
    image_dir = tmp_path_factory.mktemp("images")
    for key, pixels in images.items():
        Image.fromarray(pixels).save(image_dir / _name(*key))
    records = load_cuhk03(root, image_dir=image_dir)
    assert [(r.image_path, r.person_id, r.camera_id, r.split) for r in records] == _expected(
        protocol, str(image_dir)
    )
    os.remove(image_dir / _name(2, 2, 0))
    with pytest.raises(DatasetFormatError, match="no cuhk-03.mat") as error:
        load_cuhk03(root, image_dir=image_dir)
    assert _name(2, 2, 0) in str(error.value)


def test_labeled_variant_and_bad_variant(cuhk03):
    root, images, protocol = cuhk03
    scipy.io.savemat(root / "cuhk03_new_protocol_config_labeled.mat", protocol)
    _write_raw_mat(root / "cuhk-03.mat", images, variant="labeled")
    records = load_cuhk03(root, variant="labeled")
    assert all(os.path.isfile(r.image_path) and "images_labeled" in r.image_path for r in records)
    with pytest.raises(ValueError, match="variant"):
        load_cuhk03(root, variant="both")


def _rewrite(root, protocol):
    path = root / "cuhk03_new_protocol_config_detected.mat"
    scipy.io.savemat(path, protocol)
    return str(path)


def test_zero_index_is_rejected_as_not_one_based(cuhk03):
    root, _, protocol = cuhk03
    protocol["query_idx"][2, 0] = 0
    path = _rewrite(root, protocol)
    with pytest.raises(DatasetFormatError, match="1-based") as error:
        load_cuhk03(root, check_images=False)
    assert path in str(error.value) and "record 2" in str(error.value)
    assert "field 'query_idx'" in str(error.value)


def test_cam_id_must_match_the_view_in_the_name(cuhk03):
    root, _, protocol = cuhk03
    protocol["camId"][3, 0] = 2
    _rewrite(root, protocol)
    with pytest.raises(DatasetFormatError, match="camId 2 disagrees") as error:
        load_cuhk03(root, check_images=False)
    assert "record 3" in str(error.value) and "field 'camId'" in str(error.value)


def test_protocol_naming_an_empty_cell(cuhk03):
    root, images, protocol = cuhk03
    _write_raw_mat(root / "cuhk-03.mat", images)
    protocol["filelist"][0, 0] = _name(1, 2, 9)  # an empty cell in the raw file
    protocol["labels"][0, 0] = 2
    protocol["camId"][0, 0] = 2
    _rewrite(root, protocol)
    with pytest.raises(DatasetFormatError, match="empty cell") as error:
        load_cuhk03(root)
    assert str(root / "cuhk-03.mat") in str(error.value) and _name(1, 2, 9) in str(error.value)


def test_malformed_files(cuhk03):
    root, _, _ = cuhk03
    (root / "cuhk-03.mat").write_bytes(b"MATLAB 7.3 MAT-file but not HDF5")
    with pytest.raises(DatasetFormatError, match="HDF5"):
        load_cuhk03(root)
    protocol_path = root / "cuhk03_new_protocol_config_detected.mat"
    truncate(protocol_path, 0.5)
    with pytest.raises(DatasetFormatError, match="malformed or truncated") as error:
        load_cuhk03(root)
    assert str(protocol_path) in str(error.value)
    scipy.io.savemat(protocol_path, {"filelist": np.array(["1_001_1_01.png"], dtype=object)})
    with pytest.raises(DatasetFormatError, match="field 'labels'"):
        load_cuhk03(root)
