"""Retrieval metrics against per-query NumPy loops (eval_reference_impls) and hand cases."""

import numpy as np
import pytest

from evaluation import eval_reference_impls as ref
from reid_jax.evaluation import retrieval

KS = (1, 3, 200)  # 200 > every gallery here


@pytest.fixture(params=["count", "sort"])
def backend(request, monkeypatch):
    threshold = 1e9 if request.param == "count" else -1.0
    monkeypatch.setattr(retrieval, "_SORT_BACKEND_MIN_MEAN_POSITIVES", threshold)
    return request.param


def _assert_same(got, want):
    assert set(got) == set(want)
    for key, value in want.items():
        if np.isnan(value):
            assert np.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ap_mode", ["step", "trapezoid"])
def test_text_metrics_match_per_query_loop(backend, seed, ap_mode):
    rng = np.random.default_rng(seed)
    num_q, num_g = rng.integers(3, 40), rng.integers(3, 60)
    gallery_ids = rng.integers(0, 8, num_g)
    query_ids = rng.integers(0, 10, num_q)  # ids 8, 9: no positive in the gallery
    if seed % 2:  # many exact ties
        sim = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    else:
        sim = rng.standard_normal((num_q, num_g)).astype(np.float32)
    got = retrieval.retrieval_metrics(sim, query_ids, gallery_ids, ks=KS, ap_mode=ap_mode)
    want = ref.per_query_text_metrics(sim, query_ids, gallery_ids, KS, ap_mode)
    _assert_same(got, want)


def test_trapezoid_hand_cases():
    # ssan §5.3 / §7.4: a single hit at rank 0 -> 1.0, at rank 1 -> 0.25; hits {0, 2} -> 0.7917.
    sim = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]], np.float32)
    gallery = np.array([0, 1, 0])
    for qid, want_trap, want_step, want_inp in ((1, 0.25, 0.5, 0.5), (0, 19 / 24, 5 / 6, 2 / 3)):
        q = np.array([qid])
        trap = retrieval.retrieval_metrics(sim[:1], q, gallery, ap_mode="trapezoid")
        step = retrieval.retrieval_metrics(sim[:1], q, gallery, ap_mode="step")
        assert trap["mAP"] == pytest.approx(100 * want_trap)
        assert step["mAP"] == pytest.approx(100 * want_step)
        assert step["mINP"] == pytest.approx(100 * want_inp)
    single = retrieval.retrieval_metrics(
        sim[:1], np.array([0]), np.array([0, 1, 2]), ap_mode="trapezoid"
    )
    assert single["mAP"] == pytest.approx(100.0) and single["R1"] == 100.0


def test_queries_without_positives_and_ties_by_index():
    sim = np.zeros((2, 4), np.float32)  # all tied: ranks follow gallery order
    got = retrieval.retrieval_metrics(sim, np.array([5, 7]), np.array([1, 5, 2, 5]), ks=(1, 2, 9))
    # query 0: positives at ranks 1 and 3; query 1 (id 7) has none: a miss, not in mAP/mINP.
    assert got["R1"] == 0.0 and got["R2"] == 50.0 and got["R9"] == 50.0
    assert got["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 4) / 2)
    assert got["mINP"] == pytest.approx(100 * 2 / 4)
    none = retrieval.retrieval_metrics(sim, np.array([8, 9]), np.array([1, 5, 2, 5]))
    assert none["R10"] == 0.0 and np.isnan(none["mAP"]) and np.isnan(none["mINP"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        retrieval.retrieval_metrics(np.full((1, 2), np.nan), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="query_ids"):
        retrieval.retrieval_metrics(np.zeros((2, 2)), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="ap_mode"):
        retrieval.retrieval_metrics(np.zeros((1, 2)), [0], [0, 1], ap_mode="area")


def _market_case(rng, num_q, num_g, ties):
    gallery_ids = rng.choice([-1, 0, 1, 2, 3, 4], num_g)
    gallery_cams = rng.integers(0, 3, num_g)
    query_ids = rng.integers(1, 6, num_q)  # id 5 never in the gallery: skipped
    query_cams = rng.integers(0, 3, num_q)
    if ties:
        dist = rng.integers(0, 3, (num_q, num_g)).astype(np.float32)
    else:
        dist = rng.random((num_q, num_g)).astype(np.float32)
    return dist, query_ids, gallery_ids, query_cams, gallery_cams


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ap_mode", ["step", "trapezoid"])
def test_market_metrics_match_open_reid_loop(backend, seed, ap_mode):
    rng = np.random.default_rng(100 + seed)
    case = _market_case(rng, int(rng.integers(4, 30)), int(rng.integers(5, 60)), seed % 2 == 1)
    got = retrieval.image_reid_metrics(*case, ks=KS, ap_mode=ap_mode)
    want = ref.per_query_market_metrics(*case, KS, ap_mode)
    _assert_same(got, want)


def test_market_junk_rules_by_hand():
    # Query id 1 in camera 0. Gallery (ascending distance): junk -1, same-camera same id (junk),
    # a distractor 0, the true match in camera 1, another id.
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
    gids, gcams = np.array([-1, 1, 0, 1, 2]), np.array([1, 0, 1, 1, 0])
    got = retrieval.image_reid_metrics(dist, [1], gids, [0], gcams, ks=(1, 2, 5))
    assert got == {"R1": 0.0, "R2": 100.0, "R5": 100.0, "mAP": pytest.approx(50.0)}
    trap = retrieval.image_reid_metrics(dist, [1], gids, [0], gcams, ap_mode="trapezoid")
    assert trap["mAP"] == pytest.approx(25.0)


def test_market_tied_scores_form_one_threshold():
    # One positive tied with one negative at the top: sklearn counts the pair as one threshold
    # (precision 1/2), whatever their order.
    dist = np.array([[1.0, 1.0, 2.0]], np.float32)
    for gids in (np.array([3, 4, 4]), np.array([4, 3, 4])):
        step = retrieval.image_reid_metrics(dist, [3], gids, [0], [1, 1, 1], ap_mode="step")
        trap = retrieval.image_reid_metrics(dist, [3], gids, [0], [1, 1, 1], ap_mode="trapezoid")
        assert step["mAP"] == pytest.approx(50.0) and trap["mAP"] == pytest.approx(75.0)


def test_market_without_valid_query_raises():
    dist = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="no valid query"):  # all-junk gallery
        retrieval.image_reid_metrics(dist, [1, 2], [-1, -1, -1], [0, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="no valid query"):  # only same-camera matches
        retrieval.image_reid_metrics(dist, [1, 2], [1, 2, 0], [0, 1], [0, 1, 0])


def test_rank_positives_with_explicit_junk(backend):
    rng = np.random.default_rng(7)
    sim = rng.standard_normal((6, 20)).astype(np.float32)
    qids, gids = rng.integers(0, 3, 6), rng.integers(0, 3, 20)
    junk = rng.random((6, 20)) < 0.3
    ranks = retrieval.rank_positives(sim, qids, gids, junk_mask=junk)
    for i in range(6):
        keep = ~junk[i]
        order = np.argsort(-sim[i][keep], kind="stable")
        want = np.flatnonzero(gids[keep][order] == qids[i])
        assert ranks.num_positives[i] == len(want)
        np.testing.assert_array_equal(ranks.rank[i, : len(want)], want)
    ap = retrieval.average_precision(ranks)
    assert np.isnan(ap[ranks.num_positives == 0]).all()
