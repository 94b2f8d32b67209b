"""Tests for the PA-100K `annotation.mat` and APTM json readers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.pa100k import PA100K_ATTRIBUTE_NAMES, load_pa100k, load_pa100k_json

from .conftest import assert_names, truncate, write_jpeg, write_json

NAMES = (
    "Female AgeOver60 Age18-60 AgeLess18 Front Side Back Hat Glasses HandBag ShoulderBag "
    "Backpack HoldObjectsInFront ShortSleeve LongSleeve UpperStride UpperLogo UpperPlaid "
    "UpperSplice LowerStripe LowerPattern LongCoat Trousers Shorts Skirt&Dress boots"
).split()
SIZES = {"train": 4, "val": 2, "test": 3}


def _cell_column(strings):
    return np.array(strings, dtype=object).reshape(-1, 1)  # n x 1 cell, as in the real file


def _content(rng):
    content = {"attributes": _cell_column(NAMES)}
    start = 1
    for split, n in SIZES.items():
        content[f"{split}_images_name"] = _cell_column(
            [f"{i:06d}.jpg" for i in range(start, start + n)]
        )
        content[f"{split}_label"] = rng.integers(0, 2, (n, 26)).astype(np.uint8)
        start += n
    return content


@pytest.fixture
def pa100k(tmp_path):
    content = _content(np.random.default_rng(0))
    image_dir = tmp_path / "release_data" / "release_data"
    for split in SIZES:
        for i, cell in enumerate(content[f"{split}_images_name"].ravel()):
            write_jpeg(image_dir / cell, seed=i)
    os.makedirs(tmp_path / "annotation")
    mat_path = str(tmp_path / "annotation" / "annotation.mat")
    scipy.io.savemat(mat_path, content)
    return tmp_path, mat_path, content


def test_reads_mat_from_root_or_file(pa100k):
    root, mat_path, content = pa100k
    assert PA100K_ATTRIBUTE_NAMES == tuple(NAMES)
    records = load_pa100k(root)
    image_dir = os.path.join(os.path.abspath(root), "release_data", "release_data")
    expected = [
        (os.path.join(image_dir, name), tuple(int(v) for v in labels), split)
        for split in SIZES
        for name, labels in zip(
            content[f"{split}_images_name"].ravel(), content[f"{split}_label"], strict=True
        )
    ]
    assert [(r.key, r.labels, r.split) for r in records] == expected
    assert all(r.names == PA100K_ATTRIBUTE_NAMES for r in records)
    assert load_pa100k(mat_path) == records


@pytest.mark.parametrize(
    "mutate, match, field",
    [
        (
            lambda c: c.update(attributes=_cell_column(NAMES[1:] + NAMES[:1])),
            "differ",
            "attributes",
        ),
        (lambda c: c.pop("val_label"), "missing variable", "val_label"),
        (lambda c: c.update(test_label=c["test_label"][:, :25]), "shape", "test_label"),
        (lambda c: c["train_label"].__setitem__((2, 5), 2), "label 2 not in", "Side"),
        (lambda c: c.update(train_images_name=np.arange(4.0)), "cell array", "train_images_name"),
    ],
)
def test_bad_mat_content(pa100k, mutate, match, field):
    _, mat_path, content = pa100k
    mutate(content)
    scipy.io.savemat(mat_path, content)
    with pytest.raises(DatasetFormatError, match=match) as error:
        load_pa100k(mat_path)
    assert_names(error, mat_path, field=field)


def test_bad_label_names_the_image_and_truncated_mat(pa100k):
    _, mat_path, content = pa100k
    content["val_label"][1, 0] = 7
    scipy.io.savemat(mat_path, content)
    with pytest.raises(DatasetFormatError) as error:
        load_pa100k(mat_path)
    assert_names(error, mat_path, "val image 000006.jpg", "Female")
    truncate(mat_path, 0.4)
    with pytest.raises(DatasetFormatError, match="malformed or truncated"):
        load_pa100k(mat_path)


def test_missing_image(pa100k):
    root, mat_path, _ = pa100k
    os.remove(root / "release_data" / "release_data" / "000008.jpg")
    with pytest.raises(DatasetFormatError, match="000008.jpg") as error:
        load_pa100k(root)
    assert_names(error, mat_path, "test 1", "test_images_name")
    assert len(load_pa100k(root, check_images=False)) == 9


def test_json_variant(pa100k):
    root, _, content = pa100k
    entries = [
        {"image": f"release_data/release_data/{name}", "label": labels.tolist()}
        for name, labels in zip(
            content["val_images_name"].ravel(), content["val_label"], strict=True
        )
    ]
    path = write_json(root / "PA100K_val.json", entries)
    records = load_pa100k_json(path, root, "val")
    assert [(r.key, r.labels, r.split) for r in records] == [
        (os.path.join(os.path.abspath(root), e["image"]), tuple(e["label"]), "val") for e in entries
    ]
    entries[1]["label"][3] = -1  # PA-100K has no unknown label
    write_json(path, entries)
    with pytest.raises(DatasetFormatError) as error:
        load_pa100k_json(path, root, "val")
    assert_names(error, path, 1, "label[3]")
