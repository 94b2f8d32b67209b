"""End-to-end generation of a tiny dataset: determinism, layouts of all formats, atomicity."""

import collections
import concurrent.futures
import json
import os
import pathlib
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax.data.synthetic import (
    SyntheticConfig,
    dataset_paths,
    ensure_dataset,
    generate_dataset,
    preview,
)
from reid_jax.data.synthetic import __main__ as cli
from reid_jax.data.synthetic import generate as generate_module

SIZES = dict(
    cuhk_train_ids=4,
    cuhk_val_ids=2,
    cuhk_test_ids=3,
    cuhk_images_per_id=(2, 3),
    market_train_ids=4,
    market_test_ids=4,
    market_train_images_per_id=(3, 5),
    market_gallery_images_per_id=(3, 5),
    market_distractors=3,
    market_junk=2,
    mals_pairs=7,
    mals_files=2,
)
TINY = SyntheticConfig(seed=0, image_size=(64, 32), **SIZES)
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s([1-9])_(\d{6})_(\d{2})\.jpg$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {
        "a": generate_dataset(root / "a", TINY),
        "b": generate_dataset(root / "b", TINY),
        "c": generate_dataset(root / "c", SyntheticConfig(seed=1, image_size=(64, 32), **SIZES)),
    }


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _market(root: pathlib.Path, folder: str):
    out = []
    for name in sorted(os.listdir(root / "Market-1501" / folder)):
        m = MARKET_NAME.match(name)
        assert m, name
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def test_same_seed_gives_identical_bytes(tiny):
    a, b = _files(tiny["a"]["root"]), _files(tiny["b"]["root"])
    assert a.keys() == b.keys() and len(a) > 50
    assert all(a[k] == b[k] for k in a)


def test_other_seed_gives_other_bytes(tiny):
    a, c = _files(tiny["a"]["root"]), _files(tiny["c"]["root"])
    assert a["CUHK-PEDES/reid_raw.json"] != c["CUHK-PEDES/reid_raw.json"]
    shared = [k for k in a if k in c and k.endswith(".jpg")]
    assert shared and sum(a[k] == c[k] for k in shared) == 0


def test_cuhk_pedes_layout(tiny):
    paths = tiny["a"]
    records = json.loads(paths["cuhk_pedes_json"].read_text())
    ids_by_split = collections.defaultdict(set)
    images_per_id = collections.Counter()
    for rec in records:
        assert sorted(rec) == ["captions", "file_path", "id", "processed_tokens", "split"]
        ids_by_split[rec["split"]].add(rec["id"])
        images_per_id[rec["id"]] += 1
        assert re.fullmatch(r"[\w-]+/[\w-]+\.jpg", rec["file_path"])
        with Image.open(paths["cuhk_pedes_images"] / rec["file_path"]) as img:
            assert img.format == "JPEG" and img.size == (32, 64)
        assert len(rec["captions"]) == 2 and rec["captions"][0] != rec["captions"][1]
        for caption, tokens in zip(rec["captions"], rec["processed_tokens"], strict=True):
            assert tokens and all(t == t.lower() for t in tokens)
            assert "".join(tokens) == re.sub(r"\s+", "", caption.lower())
    train, val, test = ids_by_split["train"], ids_by_split["val"], ids_by_split["test"]
    assert (len(train), len(val), len(test)) == (4, 2, 3)
    assert train | val | test == set(range(1, 10))  # 1-based, contiguous, disjoint
    assert max(train) < min(val) and max(val) < min(test)
    assert all(2 <= n <= 3 for n in images_per_id.values())
    # Chance R@1 of text->image: a random gallery ranking puts a same-id image first with
    # probability (#same-id test images) / (#test images), averaged over test captions.
    gallery = [rec["id"] for rec in records if rec["split"] == "test"]
    queries = [rec["id"] for rec in records if rec["split"] == "test" for _ in rec["captions"]]
    chance = np.mean([gallery.count(q) / len(gallery) for q in queries])
    marker = json.loads(paths["marker"].read_text())
    assert marker["stats"]["cuhk_pedes"]["test_chance_r1"] == pytest.approx(chance)


def test_market_layout(tiny):
    root = tiny["a"]["root"]
    train, gallery, query = (
        _market(root, f) for f in ("bounding_box_train", "bounding_box_test", "query")
    )
    train_ids = {p for p, _ in train}
    test_ids = {p for p, _ in gallery if p > 0}
    assert len(train_ids) == 4 and len(test_ids) == 4 and not train_ids & test_ids
    assert 0 not in train_ids and -1 not in train_ids
    counts = collections.Counter(p for p, _ in gallery)
    assert counts[0] == 3 and counts[-1] == 2
    per_train_id = collections.Counter(p for p, _ in train)
    assert all(3 <= n <= 5 for n in per_train_id.values())
    for pid in train_ids:
        assert len({c for p, c in train if p == pid}) >= 2
    assert {p for p, _ in query} == test_ids  # every test identity has a query
    assert len(query) == len(set(query))  # at most one query per camera per identity
    for pid, cam in query:  # a valid positive exists in another camera
        assert any(p == pid and c != cam for p, c in gallery)


def test_market_attribute_mat(tiny):
    root = tiny["a"]["root"]
    mat = scipy.io.loadmat(tiny["a"]["market_attribute"])["market_attribute"]
    assert mat.shape == (1, 1)
    orders = {}
    for split, folder in (("train", "bounding_box_train"), ("test", "bounding_box_test")):
        struct = mat[split][0, 0]
        names = struct.dtype.names
        assert len(names) == 28 and names[-1] == "image_index"
        orders[split] = names[:-1]
        index = [str(cell[0]) for cell in struct["image_index"][0, 0][0]]
        expected = sorted({p for p, _ in _market(root, folder) if p > 0})
        assert index == [f"{p:04d}" for p in expected]
        values = {n: struct[n][0, 0] for n in orders[split]}
        for name, row in values.items():
            assert row.shape == (1, len(index))
            allowed = {1, 2, 3, 4} if name == "age" else {1, 2}
            assert set(np.unique(row).tolist()) <= allowed, name
        for prefix in ("up", "down"):
            flags = [v for n, v in values.items() if n.startswith(prefix) and n != prefix]
            assert (np.sum(np.concatenate(flags) == 2, axis=0) <= 1).all()
    assert set(orders["train"]) == set(orders["test"]) and len(set(orders["train"])) == 27
    assert orders["train"] != orders["test"]


def test_mals_layout(tiny):
    paths = tiny["a"]
    assert [p.name for p in paths["mals_annotations"]] == [
        "g_c_g_a_0_attrs.json",
        "g_c_g_a_1_attrs.json",
    ]
    seen = set()
    for path in paths["mals_annotations"]:
        for entry in json.loads(path.read_text()):
            assert list(entry) == ["image", "caption", "image_id", "label"]
            assert (paths["mals"] / entry["image"]).is_file()
            assert entry["image"].startswith("gene_crop/")
            assert entry["image_id"] not in seen
            seen.add(entry["image_id"])
            assert len(entry["label"]) == 27 and set(entry["label"]) <= {-1, 0, 1}
            said = re.search(r"backpack|rucksack|nothing|not carrying", entry["caption"])
            assert (entry["label"][4] != -1) == bool(said)
    assert len(seen) == 7


def test_readers_load_the_generated_dataset(tiny):
    from reid_jax.data.formats.attributes import load_market_attributes
    from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
    from reid_jax.data.formats.mals import load_mals
    from reid_jax.data.formats.market1501 import load_market1501

    paths = tiny["a"]
    cuhk = load_cuhk_pedes(paths["cuhk_pedes"])
    raw = json.loads(paths["cuhk_pedes_json"].read_text())
    assert len(cuhk) == len(raw)
    assert collections.Counter(r.split for r in cuhk) == collections.Counter(
        r["split"] for r in raw
    )
    market = load_market1501(paths["market1501"])
    by_split = collections.Counter(r.split for r in market)
    root = paths["root"]
    assert by_split["train"] == len(_market(root, "bounding_box_train"))
    assert by_split["query"] == len(_market(root, "query"))
    assert by_split["gallery"] == len(_market(root, "bounding_box_test"))
    attributes = load_market_attributes(paths["market_attribute"])
    assert collections.Counter(r.split for r in attributes) == {"train": 4, "test": 4}
    assert len(load_mals(paths["mals_annotations"], paths["mals"])) == 7


def test_ensure_dataset_is_idempotent(tmp_path, monkeypatch):
    root = ensure_dataset(tmp_path / "e", seed=0, image_size=(64, 32), **SIZES)
    assert root == (tmp_path / "e").absolute()
    assert dataset_paths(root, TINY)["marker"].is_file()
    before = _files(root)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(generate_module, "generate_dataset", fail)
    assert ensure_dataset(tmp_path / "e", seed=0, image_size=(64, 32), **SIZES) == root
    monkeypatch.undo()
    again = ensure_dataset(tmp_path / "e", seed=1, image_size=(64, 32), **SIZES)
    marker = json.loads((again / "SYNTHETIC_DATASET.json").read_text())
    assert marker["config"]["seed"] == 1 and _files(again) != before
    # No temporary siblings left; the lock file of concurrent callers stays (it is empty).
    assert sorted(os.listdir(tmp_path)) == [".e.lock", "e"]


def test_concurrent_callers_generate_once(tmp_path, monkeypatch):
    """Processes of one multi-process run may race on a shared disk: one generates."""
    calls = []
    real_generate = generate_module.generate_dataset

    def counting_generate(*args, **kwargs):
        calls.append(args)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(generate_module, "generate_dataset", counting_generate)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        roots = list(
            pool.map(
                lambda _: ensure_dataset(tmp_path / "d", seed=0, image_size=(64, 32), **SIZES),
                range(2),
            )
        )
    assert roots[0] == roots[1] and len(calls) == 1
    assert dataset_paths(roots[0], TINY)["marker"].is_file()


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(generate_module, "build_mals", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_dataset(tmp_path / "f", image_size=(64, 32), **SIZES)
    assert os.listdir(tmp_path) == [".f.lock"]  # only the (empty) lock file of ensure_dataset


def test_refuses_to_touch_foreign_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ensure_dataset(tmp_path / "mine", image_size=(64, 32), **SIZES)
    with pytest.raises(FileExistsError):
        generate_dataset(tmp_path / "mine", TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="cuhk_ids"):
        ensure_dataset(tmp_path / "x", cuhk_ids=3)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"image_size": (400, 128)}, "image_size"),
        ({"cuhk_images_per_id": (1, 2)}, "cuhk_images_per_id"),
        ({"seed": -1}, "seed"),
        ({"market_test_ids": 0}, "market_test_ids"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**changes)


def test_command_line_and_preview(tmp_path, tiny, capsys):
    sets = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in SIZES.items()]
    args = ["--out", str(tmp_path / "cli"), "--image_size", "64x32"]
    assert cli.main(args + [a for s in sets for a in ("--set", s)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cuhk_pedes"]["test"]["ids"] == 3
    assert 0 < report["cuhk_pedes"]["test_chance_r1"] < 1
    assert _files(tmp_path / "cli") == _files(tiny["a"]["root"])  # same config, same bytes
    out = tmp_path / "grid.png"
    assert (
        preview.main(
            ["--data", str(tiny["a"]["root"]), "--out", str(out), "--rows", "1", "--cols", "3"]
        )
        == 0
    )
    with Image.open(out) as img:
        assert img.width >= 3 * 64 and img.height > 128
