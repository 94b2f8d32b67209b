"""The approximate (faiss IVF-Flat) index: its recall against exact search, and an index
folder that carries one, drops it, and falls back to exact search when it cannot be read
(issue 12)."""

import json

import numpy as np
import pytest

from reid_jax import cli
from reid_jax.inference import approximate
from reid_jax.inference.index import build_index, load_index
from reid_jax.inference.search import Searcher, search, top_k_rows
from tests.inference.conftest import write_image


def _clustered(count, dim, identities, seed):
    """Unit rows around `identities` random centres (a gallery of people), and one more
    noisy view of the first 50 centres as queries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    gallery = centres[rng.integers(0, identities, count)] + 0.6 * rng.normal(size=(count, dim))
    queries = centres[:50] + 0.6 * rng.normal(size=(50, dim))

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return unit(gallery), unit(queries)


def test_recall_against_exact_search():
    gallery, queries = _clustered(4000, 32, 200, seed=0)
    exact = np.stack([top_k_rows(gallery @ q, 10) for q in queries])
    index = approximate.build(gallery)
    assert index.nlist == approximate.default_nlist(4000) == 63
    assert index.nprobe == approximate.default_nprobe(63) == 8
    scores, rows = approximate.search(index, queries, 10)
    recall = approximate.recall_at_k(rows, exact)
    assert 0.9 <= recall <= 1.0
    # Scores are the exact inner products of the rows found, best first.
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ gallery.T, rows, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # Scanning every cell is exact search.
    index.nprobe = index.nlist
    _, rows = approximate.search(index, queries, 10)
    assert approximate.recall_at_k(rows, exact) == 1.0
    # Few cells scanned on purpose: recall drops, and the measure shows it.
    index.nprobe = 1
    _, rows = approximate.search(index, queries, 10)
    assert approximate.recall_at_k(rows, exact) < recall
    assert approximate.recall_at_k(exact[:, ::-1], exact) == 1.0  # order does not matter
    with pytest.raises(ValueError, match="nlist"):
        approximate.build(gallery[:10], nlist=11)


def test_an_index_with_an_approximate_index(tmp_path, alignedreid_bundle, capsys, caplog):
    images, folder = tmp_path / "images", tmp_path / "index"
    for i in range(6):
        write_image(images / f"p{i}.jpg", seed=i)
    argv = ["index", "--bundle", str(alignedreid_bundle.path), "--images", str(images)]
    assert cli.main(argv + ["--index", str(folder), "--approximate"]) == 0
    assert "approximate index: ivf_flat, 1 cells" in capsys.readouterr().out
    manifest = json.loads((folder / "index.json").read_text())
    entry = manifest["approximate"]
    assert entry == {"kind": "ivf_flat", "file": "approximate-1.faiss", "nlist": 1, "nprobe": 1}

    query = images / "p3.jpg"
    approx = search(folder, image=query, top_k=4)
    exact = search(folder, image=query, top_k=4, exact=True)
    assert approx.method == "embedding (approximate)" and exact.method == "embedding (exact)"
    assert approx.paths == exact.paths and approx.paths[0] == str(query)
    np.testing.assert_allclose(approx.scores, exact.scores, atol=1e-5)

    # A corrupt file: a warning and exact search, not a crash.
    (folder / entry["file"]).write_bytes(b"not faiss")
    with caplog.at_level("WARNING"):
        searcher = Searcher(load_index(folder))
    assert searcher.approximate is None and "not a faiss index" in caplog.text
    assert searcher.search(image=query, top_k=4).paths == exact.paths

    # Re-indexing without --approximate drops it (and its file).
    build_index(alignedreid_bundle, images, folder, progress=False)
    manifest = json.loads((folder / "index.json").read_text())
    assert manifest["approximate"] is None and manifest["generation"] == 2
    assert not list(folder.glob("*.faiss"))
