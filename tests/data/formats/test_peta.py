from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.peta import load_peta

from .conftest import assert_names, truncate

NUM_IMAGES, NUM_ATTRIBUTES = 7, 6
NAMES = [f"attr{j}" for j in range(NUM_ATTRIBUTES)]


def _cell(values):
    cell = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        cell[i, 0] = v
    return cell


def _content(rng, partition_field="partion_attribute"):
    labels = rng.integers(0, 2, (NUM_IMAGES, NUM_ATTRIBUTES))
    metadata = rng.integers(0, 50, (NUM_IMAGES, 5))  # never read as labels
    partitions = [
        {
            "train": np.array([[1], [2], [3]]),
            "val": np.array([[4]]),
            "test": np.array([[5], [6], [7]]),
        },
        {
            "train": np.array([[7], [6], [5]]),
            "val": np.array([[2]]),
            "test": np.array([[1], [3], [4]]),
        },
    ]
    peta = {
        "data": np.concatenate([metadata, labels], axis=1).astype(float),
        "attribute": _cell(NAMES),
        "selected_attribute": np.array([[2], [5]], float),
        partition_field: _cell(partitions),
    }
    return {"peta": peta}, labels


def _write(root, content):
    for i in range(NUM_IMAGES):
        path = root / "images" / f"{i + 1:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 4, 3), i, np.uint8)).save(path)
    mat_path = root / "PETA.mat"
    scipy.io.savemat(mat_path, content)
    return mat_path


@pytest.mark.parametrize("partition_field", ["partion_attribute", "partition_attribute"])
def test_reads_labels_names_selection_and_partitions(tmp_path, partition_field):
    content, labels = _content(np.random.default_rng(0), partition_field)
    mat_path = _write(tmp_path, content)
    peta = load_peta(tmp_path)
    assert peta.attribute_names == tuple(NAMES)
    np.testing.assert_array_equal(peta.labels(), labels)  # columns 5.., not the metadata
    assert peta.records[0].key == os.path.join(os.path.abspath(tmp_path), "images", "00001.png")
    assert peta.records[6].key.endswith("00007.png") and peta.records[6].split == "all"
    np.testing.assert_array_equal(peta.selected, [1, 4])
    assert len(peta.partitions) == 2
    np.testing.assert_array_equal(peta.partitions[0]["train"], [0, 1, 2])
    np.testing.assert_array_equal(peta.partitions[1]["test"], [0, 2, 3])
    assert load_peta(mat_path).labels().tolist() == labels.tolist()


def test_label_outside_zero_one_names_image_and_attribute(tmp_path):
    content, _ = _content(np.random.default_rng(1))
    content["peta"]["data"][3, 5 + 2] = 2
    mat_path = _write(tmp_path, content)
    with pytest.raises(DatasetFormatError, match="not in") as error:
        load_peta(tmp_path)
    assert_names(error, mat_path, record="image 4", field="attr2")


def test_data_width_must_match_the_names(tmp_path):
    content, _ = _content(np.random.default_rng(2))
    content["peta"]["data"] = content["peta"]["data"][:, 1:]  # the metadata column quirk
    mat_path = _write(tmp_path, content)
    with pytest.raises(DatasetFormatError, match="expected") as error:
        load_peta(tmp_path)
    assert_names(error, mat_path, field="data")


def test_partition_index_out_of_range_and_missing_field(tmp_path):
    content, _ = _content(np.random.default_rng(3))
    content["peta"]["partion_attribute"][1, 0]["val"] = np.array([[8]])
    mat_path = _write(tmp_path, content)
    with pytest.raises(DatasetFormatError, match=r"out of range \[1, 7\]: 8") as error:
        load_peta(tmp_path)
    assert_names(error, mat_path, record="partition 2", field="partion_attribute.val")
    del content["peta"]["partion_attribute"]
    scipy.io.savemat(mat_path, content)
    with pytest.raises(DatasetFormatError, match="missing struct field") as error:
        load_peta(tmp_path)
    assert_names(error, mat_path, field="partition_attribute")


def test_missing_image_and_truncated_file(tmp_path):
    content, _ = _content(np.random.default_rng(4))
    mat_path = _write(tmp_path, content)
    os.remove(tmp_path / "images" / "00003.png")
    with pytest.raises(DatasetFormatError) as error:
        load_peta(tmp_path)
    assert "00003.png" in str(error.value)
    assert len(load_peta(tmp_path, check_images=False).records) == NUM_IMAGES
    truncate(mat_path)
    with pytest.raises(DatasetFormatError, match="malformed or truncated"):
        load_peta(tmp_path)
    with pytest.raises(DatasetFormatError, match="PETA annotation file not found"):
        load_peta(tmp_path / "nowhere")
