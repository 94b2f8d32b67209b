"""CUHK-PEDES / ICFG-PEDES / RSTPReid TFDS builders: tiny real-format fixtures -> ArrayRecord.

Each dataset is built once (module fixture) from files written here in the real layout, read
back with `tfds.data_source` (no TensorFlow), and compared field by field with the fixture.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from reid_jax.data.builders import registry
from reid_jax.data.errors import DatasetFormatError

_RNG = np.random.default_rng(0)


def _write_image(path, mode):
    """Writes a small random image in `mode` ('RGB' jpg/png, 'L', 'P'); returns its RGB pixels."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = _RNG.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    with Image.open(path) as saved:
        return np.asarray(saved.convert("RGB"))


def _pedes_fixture(root, *, spec, path_field, json_name, with_tokens):
    """spec: list of (split, person_id, relative image path, mode, captions)."""
    entries, expected = [], []
    for split, pid, rel, mode, captions in spec:
        pixels = _write_image(os.path.join(root, "imgs", rel), mode)
        entry = {"split": split, "id": pid, path_field: rel, "captions": captions}
        tokens = [c.lower().rstrip(".").replace(",", "").split() for c in captions]
        if with_tokens:
            entry["processed_tokens"] = tokens
        entries.append(entry)
        expected.append(
            {
                "split": split,
                "person_id": pid,
                "image_path": f"imgs/{rel}",
                "pixels": pixels,
                "mode": mode,
                "file": os.path.join(root, "imgs", rel),
                "captions": captions,
                "tokens": [" ".join(t) for t in tokens] if with_tokens else [],
            }
        )
    with open(os.path.join(root, json_name), "w") as f:
        json.dump(entries, f)
    return expected


_CUHK = [
    ("train", 1, "CUHK01/0001001.png", "RGB", ["A man in a red shirt.", "He wears jeans."]),
    ("train", 1, "CUHK01/0001002.png", "P", ["The man has a red shirt, jeans.", "A red shirt."]),
    ("train", 2, "cam_a/002_45.bmp", "L", ["A woman with a bag.", "She carries a bag."]),
    ("Val", 5, "Market/0005_c1.jpg", "RGB", ["Grey coat.", "A grey coat and hat.", "Hat."]),
    ("test", 9, "CUHK03/9_1.jpg", "RGB", ["Black shoes.", "Black shoes and socks."]),
    ("test", 9, "CUHK03/9_2.jpg", "L", ["White shoes.", "Shoes."]),
]
_ICFG = [
    ("train", 0, "test/0627/0627_010_05.jpg", "RGB", ["A young woman has black hair."]),
    ("train", 0, "train/0001/0001_c2.jpg", "RGB", ["The woman wears a skirt."]),
    ("train", 3, "train/0003/0003_c1.jpg", "L", ["A man with a cap."]),
    ("test", 7, "test/0007/0007_c4.jpg", "RGB", ["A girl, blue dress."]),
]
_RSTP = [
    ("train", 0, "0000_c1_0001.jpg", "RGB", ["A man walking.", "Man with backpack."]),
    ("train", 0, "0000_c2_0002.jpg", "RGB", ["Same man again.", "Backpack, black."]),
    ("val", 12, "0012_c5_0003.png", "P", ["A woman.", "A lady in white."]),
    ("test", 40, "0040_c3_0004.jpg", "RGB", ["A boy.", "A boy in shorts."]),
]
DATASETS = {
    "cuhk_pedes": dict(
        spec=_CUHK, path_field="file_path", json_name="reid_raw.json", with_tokens=True
    ),
    "icfg_pedes": dict(
        spec=_ICFG, path_field="file_path", json_name="ICFG-PEDES.json", with_tokens=True
    ),
    "rstpreid": dict(
        spec=_RSTP, path_field="img_path", json_name="data_captions.json", with_tokens=False
    ),
}


@pytest.fixture(scope="module", params=sorted(DATASETS))
def prepared(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(f"{name}_manual")
    expected = _pedes_fixture(str(root), **DATASETS[name])
    data_dir = tmp_path_factory.mktemp(f"{name}_data")
    builder = registry.prepare_dataset(name, manual_dir=root, data_dir=data_dir)
    return name, builder, data_dir, expected


def _text(value):
    return value.decode("utf-8")


def test_splits_and_counts(prepared):
    name, builder, _, expected = prepared
    splits = {}
    for item in expected:
        split = item["split"].lower()
        splits[split] = splits.get(split, 0) + 1
    assert {s: info.num_examples for s, info in builder.info.splits.items()} == splits
    assert builder.info.file_format.value == "array_record"


def test_examples_round_trip(prepared):
    name, _, data_dir, expected = prepared
    seen = set()
    for split in {item["split"].lower() for item in expected}:
        source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False)
        for i in range(len(source)):
            example = source[i]
            index = int(example["index"])
            want = expected[index]
            seen.add(index)
            assert want["split"].lower() == split
            np.testing.assert_array_equal(example["image"], want["pixels"])
            assert example["image"].dtype == np.uint8
            assert _text(example["image_path"]) == want["image_path"]
            assert int(example["person_id"]) == want["person_id"]
            assert [_text(c) for c in example["captions"]] == want["captions"]
            assert [_text(t) for t in example["tokens"]] == want["tokens"]
    assert seen == set(range(len(expected)))


def test_undecoded_images_are_file_bytes_for_rgb(prepared):
    name, _, data_dir, expected = prepared
    source = registry.load_data_source(name, data_dir=data_dir, split="train", decode_images=False)
    for i in range(len(source)):
        example = source[i]
        assert isinstance(example["image"], bytes)
        want = expected[int(example["index"])]
        with Image.open(io.BytesIO(example["image"])) as image:
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), want["pixels"])
        if want["mode"] == "RGB":
            with open(want["file"], "rb") as f:
                assert example["image"] == f.read()


def test_bad_image_fails_without_partial_output(tmp_path):
    root = tmp_path / "manual"
    os.makedirs(root)
    _pedes_fixture(str(root), **DATASETS["icfg_pedes"])
    (root / "imgs/train/0003/0003_c1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetFormatError, match=r"record 2, field 'image'.*0003_c1.jpg"):
        registry.prepare_dataset("icfg_pedes", manual_dir=root, data_dir=data_dir)
    leftovers = [f for _, _, files in os.walk(data_dir) for f in files if "array_record" in f]
    assert leftovers == []


def test_unknown_dataset_name():
    with pytest.raises(KeyError, match="unknown dataset"):
        registry.prepare_dataset("nope", manual_dir=".", data_dir=".")
