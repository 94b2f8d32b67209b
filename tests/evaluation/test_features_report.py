"""Features file round trip and errors; evaluate_features / run_evaluate_features outputs."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from reid_jax.data.errors import DatasetFormatError
from reid_jax.evaluation import features_file, report, retrieval


def _text_case(rng, num_q=12, num_g=9, dim=6):
    gids = np.arange(num_g) % 4
    qids = rng.integers(0, 4, num_q)
    centres = rng.standard_normal((4, dim))
    q = centres[qids] + 0.8 * rng.standard_normal((num_q, dim))
    g = centres[gids] + 0.8 * rng.standard_normal((num_g, dim))
    return q.astype(np.float32), g.astype(np.float32), qids, gids


def _cos(a, b):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_round_trip_single_and_multi_level(tmp_path):
    rng = np.random.default_rng(0)
    q, g, qids, gids = _text_case(rng)
    path = str(tmp_path / "f.npz")
    features_file.save_features(
        path,
        query_features=q,
        gallery_features=g,
        query_ids=qids,
        gallery_ids=gids,
        query_texts=[f"caption {i}" for i in range(12)],
        gallery_paths=[f"/g/{i}.jpg" for i in range(9)],
    )
    f = features_file.load_features(path)
    np.testing.assert_array_equal(f.query_features["features"], q)
    assert f.query_texts[3] == "caption 3" and f.gallery_paths[8] == "/g/8.jpg"
    assert f.similarity_kind == "cosine" and not f.has_cameras and f.similarity is None
    levels = {"global": g, "parts": rng.standard_normal((9, 3, 4)).astype(np.float32)}
    features_file.save_features(
        path,
        query_features={"global": q, "parts": rng.standard_normal((12, 3, 4))},
        gallery_features=levels,
        query_ids=qids,
        gallery_ids=gids,
        similarity=np.zeros((12, 9)),
    )
    f = features_file.load_features(path)
    assert sorted(f.query_features) == ["global", "parts"] and f.similarity.shape == (12, 9)
    assert os.listdir(tmp_path) == ["f.npz"]  # no temporary file left behind


def test_load_errors_name_file_and_field(tmp_path):
    path = str(tmp_path / "bad.npz")
    np.savez(
        path,
        query_features=np.zeros((3, 2)),
        gallery_features=np.zeros((4, 2)),
        query_ids=np.arange(3),
    )
    with pytest.raises(DatasetFormatError, match=r"bad\.npz.*field 'gallery_ids'.*missing"):
        features_file.load_features(path)
    np.savez(
        path,
        query_features=np.zeros((3, 2)),
        gallery_features=np.zeros((4, 5)),
        query_ids=np.arange(3),
        gallery_ids=np.arange(4),
    )
    with pytest.raises(DatasetFormatError, match="field 'gallery_features'"):
        features_file.load_features(path)
    np.savez(
        path,
        query_features=np.zeros((3, 2)),
        gallery_features=np.zeros((4, 2)),
        query_ids=np.arange(3),
        gallery_ids=np.arange(4),
        query_cams=np.arange(2),
        gallery_cams=np.arange(4),
    )
    with pytest.raises(DatasetFormatError, match="field 'query_cams'"):
        features_file.load_features(path)
    with pytest.raises(DatasetFormatError, match="field 'query_ids'"):
        features_file.save_features(
            str(tmp_path / "x.npz"),
            query_features=np.zeros((3, 2)),
            gallery_features=np.zeros((4, 2)),
            query_ids=[0.5, 1, 2],
            gallery_ids=np.arange(4),
        )
    assert not os.path.exists(tmp_path / "x.npz")


def test_evaluate_text_levels_and_sum():
    rng = np.random.default_rng(1)
    q, g, qids, gids = _text_case(rng)
    q2, g2 = rng.standard_normal((12, 2, 3)), rng.standard_normal((9, 2, 3))
    f = features_file.Features(
        query_features={"a": q, "b": q2},
        gallery_features={"a": g, "b": g2},
        query_ids=qids,
        gallery_ids=gids,
    )
    got = report.evaluate_features(f)
    assert list(got) == ["a", "b", "sum"]
    for name, sim in (("a", _cos(q, g)), ("b", _cos(q2, g2)), ("sum", _cos(q, g) + _cos(q2, g2))):
        want = retrieval.retrieval_metrics(sim, qids, gids)
        want["mAP_trapezoid"] = retrieval.retrieval_metrics(sim, qids, gids, ap_mode="trapezoid")[
            "mAP"
        ]
        assert got[name] == pytest.approx(want)


def test_evaluate_camera_protocol_with_rerank():
    rng = np.random.default_rng(2)
    q, g = rng.standard_normal((10, 5)).astype(np.float32), rng.standard_normal((40, 5))
    qids, gids = rng.integers(1, 5, 10), rng.integers(-1, 5, 40)
    qcams, gcams = rng.integers(0, 3, 10), rng.integers(0, 3, 40)
    f = features_file.Features(
        query_features={"features": q},
        gallery_features={"features": g.astype(np.float32)},
        query_ids=qids,
        gallery_ids=gids,
        query_cams=qcams,
        gallery_cams=gcams,
        similarity_kind="euclidean",
    )
    got = report.evaluate_features(f, rerank=True)
    dist = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    want = retrieval.image_reid_metrics(dist, qids, gids, qcams, gcams)
    assert got["features"]["R1"] == pytest.approx(want["R1"])
    assert got["features"]["mAP"] == pytest.approx(want["mAP"], abs=1e-6)
    assert set(got["features+rerank"]) == {"R1", "R5", "R10", "mAP", "mAP_trapezoid"}


def test_run_evaluate_features_writes_outputs(tmp_path, capsys):
    rng = np.random.default_rng(3)
    q, g, qids, gids = _text_case(rng)
    paths = []
    for i in range(9):
        paths.append(str(tmp_path / f"g{i}.png"))
        Image.fromarray(np.full((32, 16, 3), 25 * i, np.uint8)).save(paths[-1])
    features_file.save_features(
        str(tmp_path / "f.npz"),
        query_features=q,
        gallery_features=g,
        query_ids=qids,
        gallery_ids=gids,
        query_texts=[f"text {i}" for i in range(12)],
        gallery_paths=paths,
    )
    out = tmp_path / "eval"
    metrics = report.run_evaluate_features(str(tmp_path / "f.npz"), str(out), rank_list_queries=3)
    printed = capsys.readouterr().out
    assert "variant" in printed and "mAP_trapezoid" in printed
    assert json.loads((out / "metrics.json").read_text())["features"] == pytest.approx(
        metrics["features"]
    )
    assert sorted(os.listdir(out)) == ["metrics.json", "rank_list.html", "rank_list.png"]


def test_format_metrics_table_alignment():
    table = report.format_metrics_table(
        {"global": {"R1": 61.37, "mAP": float("nan")}, "sum+rerank": {"R1": 5.0, "mINP": 1.234}}
    )
    lines = table.splitlines()
    assert lines[0].split() == ["variant", "R1", "mAP", "mINP"]
    assert lines[2].split() == ["global", "61.37", "-", "-"]
    assert lines[3].split() == ["sum+rerank", "5.00", "-", "1.23"]
    assert len({len(line) for line in lines}) == 1  # every row has the same width
