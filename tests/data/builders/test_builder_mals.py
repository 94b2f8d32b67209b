"""MALS TFDS builder: tiny annotation files in the real format -> ArrayRecord + records file.

The fixture has two of the 91 annotation files (read in the reference order, 4x before
c_g_a_0, not alphabetically), one image named by two pairs (stored once) and a greyscale
image (stored as RGB).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from reid_jax.data import image_locations, transforms
from reid_jax.data.builders import registry
from reid_jax.data.formats.mals import load_mals

_LABEL = [1, 0, -1] * 9
# file subset -> [(image path relative to the root, caption, image_id, image mode)]
_FILES = {
    "c_g_a_0": [
        ("gene_crop/c_g_a_0/0.jpg", "a man in a red coat", "c_g_a_0_0", "RGB"),
        ("gene_crop/c_g_a_0/1.jpg", "a woman with a bag", "c_g_a_0_1", "L"),
        ("gene_crop/4x/7.jpg", "the same man again", "c_g_a_0_2", "RGB"),
    ],
    "4x": [
        ("gene_crop/4x/7.jpg", "a man in grey trousers", "4x_7", "RGB"),
        ("gene_crop/4x/8.png", "a girl in a blue dress", "4x_8", "RGB"),
    ],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mals")
    rng = np.random.default_rng(3)
    for subset, entries in _FILES.items():
        rows = []
        for rel, caption, image_id, mode in entries:
            path = root / rel
            if not path.exists():
                os.makedirs(path.parent, exist_ok=True)
                pixels = rng.integers(0, 256, (12, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).convert(mode).save(path)
            rows.append({"image": rel, "caption": caption, "image_id": image_id, "label": _LABEL})
        os.makedirs(root / "gene_attrs", exist_ok=True)
        (root / "gene_attrs" / f"g_{subset}_attrs.json").write_text(json.dumps(rows))
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = registry.prepare_dataset("mals", manual_dir=root, data_dir=data_dir)
    return root, data_dir, builder


def test_one_example_per_distinct_image_in_first_appearance_order(prepared):
    root, data_dir, builder = prepared
    assert builder.info.splits["train"].num_examples == 4  # 5 pairs, one image twice
    source = registry.load_data_source("mals", data_dir=data_dir, split="train")
    paths = [source[i]["image_path"].decode() for i in range(len(source))]
    # 4x comes first in the reference order (aptm §1.1).
    assert paths == [
        "gene_crop/4x/7.jpg",
        "gene_crop/4x/8.png",
        "gene_crop/c_g_a_0/0.jpg",
        "gene_crop/c_g_a_0/1.jpg",
    ]
    shared = source[0]
    assert [c.decode() for c in shared["captions"]] == [
        "a man in grey trousers",
        "the same man again",
    ]
    assert [i.decode() for i in shared["image_ids"]] == ["4x_7", "c_g_a_0_2"]
    assert [int(i) for i in shared["pair_indices"]] == [0, 4]
    np.testing.assert_array_equal(np.asarray(shared["labels"]), [_LABEL, _LABEL])
    assert [int(source[i]["index"]) for i in range(len(source))] == [0, 1, 2, 3]


def test_prepared_records_equal_the_parser_and_decode_like_the_files(prepared):
    root, data_dir, _ = prepared
    files = [root / "gene_attrs" / f"g_{s}_attrs.json" for s in ("4x", "c_g_a_0")]
    parsed = load_mals(files, root)
    records = registry.load_prepared_records("mals", data_dir)
    assert len(records) == len(parsed) == 5
    for record, pair in zip(records, parsed, strict=True):
        assert dataclasses.replace(record, image_path="") == dataclasses.replace(
            pair, image_path=""
        )
        location = image_locations.parse_location(record.image_path)
        assert location.name == "mals" and location.split == "train"
        pixels = transforms.load_rgb(record.image_path)
        assert pixels.dtype == np.uint8 and pixels.shape == (12, 6, 3)
        np.testing.assert_array_equal(pixels, transforms.load_rgb(pair.image_path))
    # The repeated image: both pairs point at one stored example.
    assert records[0].image_path == records[4].image_path


def test_location_past_the_end_names_it(prepared):
    _, data_dir, _ = prepared
    location = image_locations.make_location("mals", "train", 99, data_dir)
    with pytest.raises(FileNotFoundError, match="position 99 is past the end of mals/train"):
        transforms.load_rgb(location)


def test_malformed_location_is_a_value_error():
    with pytest.raises(ValueError, match="not an image location"):
        image_locations.parse_location("tfds://mals/train@/data")
    with pytest.raises(ValueError, match="not a non-negative integer"):
        image_locations.parse_location("tfds://mals/train/x@/data")


def test_rank_list_shows_prepared_images_and_their_short_names(prepared, tmp_path):
    """Rank lists of a run trained from a prepared dataset show the stored pictures (not the
    'missing' placeholder) and the location's short name, not the data directory."""
    from reid_jax.evaluation import rank_list

    _, data_dir, _ = prepared
    locations = [image_locations.make_location("mals", "train", i, data_dir) for i in range(4)]
    page = tmp_path / "rank.html"
    rank_list.render_rank_list(
        queries=locations[:1],
        gallery_paths=locations,
        similarity=np.eye(1, 4, dtype=np.float32),
        query_ids=np.array([0]),
        gallery_ids=np.arange(4),
        out_png=str(tmp_path / "rank.png"),
        out_html=str(page),
        num_queries=1,
        top_k=4,
    )
    text = page.read_text()
    assert "mals/train/3" in text and str(data_dir) not in text
    thumbnail = rank_list._thumbnail(locations[1])
    want = Image.fromarray(transforms.load_rgb(locations[1])).resize(thumbnail.size, Image.BICUBIC)
    assert np.array_equal(np.asarray(thumbnail), np.asarray(want))
