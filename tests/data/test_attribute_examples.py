"""Attribute-retrieval data on real-format fixtures: expected queries, relevance and groups
derived by hand (attribute_reid §2, §4)."""

import os

import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax.data import attribute_examples
from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import attributes
from reid_jax.data.formats.attributes import MARKET_ATTRIBUTE_NAMES
from reid_jax.data.synthetic.writers import market_file_name, write_market_attributes


def _codes(gender=1, age=2, upred=1, downblue=2):
    """One identity's Market codes (1/2, age 1..4)."""
    codes = {name: 1 for name in MARKET_ATTRIBUTE_NAMES}
    codes.update(gender=gender, age=age, upred=upred, downblue=downblue)
    return codes


def _image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 8)).save(path)


def _market(root, train, test, images):
    """images: split folder -> [(person_id, camera)]."""
    root = root / "Market-1501-v15.09.15"
    for folder, entries in images.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for frame, (pid, cam) in enumerate(entries):
            _image(root / folder / market_file_name(pid, cam, 1, frame, 1))
    write_market_attributes(root / "market_attribute.mat", train, test)
    return root


def _data_config(dataset, root, **extra):
    return ml_collections.ConfigDict(
        dict(
            dataset=dataset,
            root=str(root),
            attribute_file="",
            embedded_seed=0,
            embedded_image_size=(128, 64),
            embedded_sizes=ml_collections.ConfigDict(),
            **extra,
        )
    )


@pytest.fixture
def market(tmp_path):
    # Identities 4 and 5 share one vector; 6 differs only in age (a different query).
    train = {1: _codes(), 2: _codes(gender=2), 3: _codes()}
    test = {4: _codes(upred=2), 5: _codes(upred=2), 6: _codes(upred=2, age=3)}
    images = {
        "bounding_box_train": [(1, 1), (1, 2), (2, 1), (3, 3), (3, 1)],
        "bounding_box_test": [(4, 1), (4, 2), (5, 1), (6, 3), (0, 1), (-1, 2)],
        "query": [(4, 3), (6, 1)],
    }
    return _market(tmp_path, train, test, images)


def test_market_queries_relevance_groups_and_semantic_ids(market):
    data = attribute_examples.load_attribute_dataset(_data_config("market1501", market))
    # Gallery: the 4 annotated test images (distractor 0000 and junk -1 have no attributes).
    assert len(data.gallery_paths) == 4
    names = [os.path.basename(p) for p in data.gallery_paths]
    assert not any(n.startswith(("0000_", "-1_")) for n in names)
    # Two distinct test vectors -> two queries; ids 4 and 5 share the first one.
    assert len(data.query_attributes) == 2
    ids = dict(zip(data.gallery_paths, data.protocol.gallery_ids, strict=True))
    by_person = {os.path.basename(p)[:4]: i for p, i in ids.items()}
    assert by_person["0004"] == by_person["0005"] != by_person["0006"]
    assert data.protocol.query_cams is None  # no junk
    assert 0 not in data.protocol.gallery_ids  # ids shifted past the distractor id
    # Relevant images per query: 3 (ids 4 + 5) and 1 (id 6).
    counts = sorted((data.protocol.gallery_ids[None] == data.protocol.query_ids[:, None]).sum(1))
    assert counts == [1, 3]
    # 30-column model encoding: age 2 (teenager) -> one-hot column 10; upred at column 15.
    assert data.num_columns == 30 and data.query_attributes.shape == (2, 30)
    assert data.query_attributes[:, 9:13].sum(1).tolist() == [1, 1]
    assert set(data.query_attributes[:, 13 + 2]) == {1}
    # Training: 3 identities, PK groups 0..2 in id order, two share a vector -> 2 semantic IDs.
    assert data.train_groups.tolist() == [0, 0, 1, 2, 2]
    assert data.group_sids[0] == data.group_sids[2] != data.group_sids[1]
    assert len(data.sid_attributes) == 2
    # The query language describes each query.
    texts = data.query_texts()
    assert all("upper=red" in t for t in texts)
    assert {"age=teenager", "age=adult"} == {t.split(" ")[9] for t in texts}


def test_market_gallery_with_query_adds_query_images(market):
    data = attribute_examples.load_attribute_dataset(
        _data_config("market1501", market), protocol="with_query"
    )
    assert len(data.gallery_paths) == 6
    counts = sorted((data.protocol.gallery_ids[None] == data.protocol.query_ids[:, None]).sum(1))
    assert counts == [2, 4]


def test_missing_training_attributes_name_the_file(tmp_path):
    root = _market(
        tmp_path,
        {1: _codes()},
        {4: _codes()},
        {"bounding_box_train": [(1, 1), (2, 1)], "bounding_box_test": [(4, 1)], "query": []},
    )
    with pytest.raises(DatasetFormatError, match="market_attribute.mat.*1 training identities"):
        attribute_examples.load_attribute_dataset(_data_config("market1501", root))


def test_peta_colour_families_group_and_followup_split(tmp_path):
    """PETA: 105 columns (61 binary + 4 x 11 colours) -> 65 groups; 210 semantic IDs with 2
    images each and 5 singletons: 200 held out, 10 train (20 images), 200 queries."""
    binary = [f"attr{i}" for i in range(61)]
    colours = [
        f"{family}{colour}"
        for family in attribute_examples.PETA_COLOUR_FAMILIES
        for colour in attribute_examples.PETA_COLOURS
    ]
    names = binary[:30] + colours + binary[30:]
    rng = np.random.default_rng(0)
    rows = np.unique(rng.integers(0, 2, (400, 105)), axis=0)[:215]
    labels = np.concatenate([rows[:210], rows[:210], rows[210:]])
    data = np.concatenate([np.zeros((len(labels), 5)), labels], axis=1)
    attribute = np.empty((len(names), 1), dtype=object)
    attribute[:, 0] = names
    partition = np.empty((1, 1), dtype=object)
    partition[0, 0] = {
        "train": np.array([[1.0]]),
        "val": np.array([[2.0]]),
        "test": np.array([[3.0]]),
    }
    peta = {
        "data": data.astype(np.float64),
        "attribute": attribute,
        "selected_attribute": np.arange(1, 36, dtype=np.float64)[:, None],
        "partition_attribute": partition,
    }
    folder = tmp_path / "PETA"
    folder.mkdir()
    scipy.io.savemat(folder / "PETA.mat", {"peta": peta})
    for i in range(len(labels)):
        _image(folder / "images" / f"{i + 1:05d}.png")
    dataset = attribute_examples.load_attribute_dataset(_data_config("peta", folder))
    assert len(dataset.groups) == 61 + 4
    assert dataset.groups[30] == tuple(range(30, 41))  # the first colour family, together
    assert len(dataset.query_attributes) == 200
    assert len(dataset.gallery_paths) == 400
    assert len(dataset.train_paths) == 20 and len(dataset.sid_attributes) == 10
    # Each query's own source image is junk: exactly one relevant image remains per query.
    protocol = dataset.protocol
    relevant = protocol.query_ids[:, None] == protocol.gallery_ids[None]
    junk = relevant & (protocol.query_cams[:, None] == protocol.gallery_cams[None])
    assert (relevant.sum(1) == 2).all() and (junk.sum(1) == 1).all()


def test_duke_reads_23_columns_and_maps_invalid_zero_to_no(tmp_path, caplog):
    names = attributes.DUKE_ATTRIBUTE_NAMES
    root = tmp_path / "DukeMTMC-reID"
    files = {
        "bounding_box_train": ["0001_c1_f0000001.jpg", "0002_c2_f0000002.jpg"],
        "bounding_box_test": ["0003_c1_f0000003.jpg", "0004_c2_f0000004.jpg"],
        "query": ["0003_c2_f0000005.jpg"],
    }
    for folder, entries in files.items():
        for name in entries:
            _image(root / folder / name)

    def split(keys, top):
        values = {n: np.ones((1, len(keys))) for n in names}
        values["top"] = np.asarray([top], np.float64)
        cell = np.empty((1, len(keys)), dtype=object)
        cell[0, :] = keys
        return {"image_index": cell, **values}

    content = {"train": split(["0001", "0002"], [0, 2]), "test": split(["0003", "0004"], [1, 2])}
    scipy.io.savemat(root / "duke_attribute.mat", {"duke_attribute": content})
    data = attribute_examples.load_attribute_dataset(_data_config("dukemtmc", root))
    assert data.num_columns == 23 and len(data.groups) == 10 and data.softmax_groups == ()
    top = names.index("top")
    assert data.group_attributes[:, top].tolist() == [0, 1]  # invalid 0 -> 0 ('short')
    assert len(data.query_attributes) == 2 and len(data.gallery_paths) == 2
    assert "invalid (0) attribute values" in caplog.text


def test_market_followup_protocol_junk_is_the_representatives_camera(market):
    """§4.4 on the fixture: query A (ids 4, 5) comes from id 4's query image (camera 3),
    query B (id 6) from id 6's (camera 1); each query's own image is junk and nothing else."""
    data = attribute_examples.load_attribute_dataset(
        _data_config("market1501", market), protocol="followup"
    )
    p = data.protocol
    assert len(data.gallery_paths) == 6 and len(data.query_attributes) == 2
    relevant = p.query_ids[:, None] == p.gallery_ids[None]
    junk = relevant & (p.query_cams[:, None] == p.gallery_cams[None])
    names = np.asarray([os.path.basename(x)[:7] for x in data.gallery_paths])
    for q in range(2):
        junk_names = sorted(names[junk[q]])
        assert junk_names in (["0004_c3"], ["0006_c1"])
    assert sorted((relevant & ~junk).sum(1).tolist()) == [1, 3]
