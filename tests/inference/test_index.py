"""The gallery index: incremental updates embed only what changed, and a killed indexer
resumes to the same index as an uninterrupted run (issue 12)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reid_jax.inference.index import build_index, list_images, load_index
from tests.inference.conftest import write_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle(alignedreid_bundle):
    return alignedreid_bundle


def _gallery(root: Path, count: int) -> None:
    suffixes = (".jpg", ".png", ".bmp", ".JPG")
    for i in range(count):
        write_image(root / f"cam{i % 3}" / f"p{i:03d}{suffixes[i % 4]}", seed=i, size=(20 + i, 40))
    (root / "notes.txt").write_text("not an image")


def _same_index(a: Path, b: Path) -> None:
    x, y = load_index(a), load_index(b)
    assert x.paths == y.paths
    np.testing.assert_allclose(x.embeddings, y.embeddings, atol=1e-6)


def test_reindexing_embeds_only_new_and_changed_files(tmp_path, bundle):
    images = tmp_path / "images"
    _gallery(images, 12)
    assert len(list_images(images)) == 12  # every case of suffix, recursive, no .txt
    first = build_index(bundle, images, tmp_path / "index", chunk_size=5, progress=False)
    assert (first.embedded, first.reused, first.dropped, first.total) == (12, 0, 0, 12)
    index = load_index(tmp_path / "index")
    assert index.embeddings.shape == (12, index.manifest["dim"])
    assert index.paths[0].endswith("cam0/p000.jpg")
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    # Add two, delete one, change one (new content and size).
    write_image(images / "new" / "a.png", seed=100)
    write_image(images / "new" / "b.jpg", seed=101)
    (images / "cam0" / "p000.jpg").unlink()
    time.sleep(0.01)
    write_image(images / "cam1" / "p001.png", seed=555, size=(30, 50))
    (images / "new" / "broken.jpg").write_bytes(b"not a jpeg")  # left out, with a warning
    second = build_index(bundle, images, tmp_path / "index", chunk_size=5, progress=False)
    assert (second.embedded, second.reused, second.dropped, second.total) == (3, 10, 1, 13)
    assert second.unreadable == ("new/broken.jpg",)
    assert not list((tmp_path / "index" / "pending").iterdir())
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert manifest["generation"] == 2
    assert sorted(p.name for p in (tmp_path / "index").glob("embeddings-*.npy")) == [
        "embeddings-2.npy"
    ]
    # The same as indexing the current folder from scratch.
    build_index(bundle, images, tmp_path / "fresh", chunk_size=5, progress=False)
    _same_index(tmp_path / "index", tmp_path / "fresh")


@pytest.mark.slow
def test_a_killed_indexer_resumes_to_the_uninterrupted_index(tmp_path, bundle):
    images = tmp_path / "images"
    _gallery(images, 40)
    command = [sys.executable, "-m", "reid_jax.cli", "index", "--bundle", str(bundle.path)]
    command += ["--images", str(images), "--index", str(tmp_path / "index"), "--chunk-size", "2"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pending = tmp_path / "index" / "pending"
    deadline = time.time() + 240
    while time.time() < deadline and not (pending.is_dir() and any(pending.glob("chunk-*.npz"))):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "index" / "index.json").exists()  # killed mid-run
    saved = len(list(pending.glob("chunk-*.npz")))
    assert saved >= 1
    resumed = build_index(bundle, images, tmp_path / "index", chunk_size=2, progress=False)
    assert resumed.reused >= 2 * saved and resumed.embedded == 40 - resumed.reused
    build_index(bundle, images, tmp_path / "straight", chunk_size=2, progress=False)
    _same_index(tmp_path / "index", tmp_path / "straight")
