"""APTM two-stage score assembly against NumPy re-derivations of aptm §6.2."""

import numpy as np
import pytest

from reid_jax.evaluation import itm_rerank, retrieval


def _scorer(calls):
    def score(q, g):
        calls.append(q.shape)
        return np.sin(7.0 * q + 0.37 * g).astype(np.float32) * 3  # deterministic "ITM logit"

    return score


def _inputs(seed=0, num_q=13, num_g=40):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (num_q, num_g)).astype(np.float32)


def _topk(itc, k):
    return np.argsort(-itc, axis=1, kind="stable")[:, :k]


def test_itm_only_assembly():
    itc = _inputs()
    got = itm_rerank.itm_rerank_scores(itc, _scorer([]), k=5, assembly="itm_only")
    top = _topk(itc, 5)
    want = np.full(itc.shape, -1000.0, np.float32)
    rows = np.arange(itc.shape[0])[:, None]
    want[rows, top] = np.sin(7.0 * rows + 0.37 * top) * 3
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_fused_single_gpu_is_clean_formula():
    itc = _inputs(1)
    got = itm_rerank.itm_rerank_scores(itc, _scorer([]), k=6, reference_gpus=1)
    top = _topk(itc, 6)
    rows = np.arange(itc.shape[0])[:, None]
    itm = np.sin(7.0 * rows + 0.37 * top) * 3
    filled = np.repeat(itm.min(1, keepdims=True), itc.shape[1], 1)
    filled[rows, top] = itm
    norm = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    np.testing.assert_allclose(got, norm(filled) + 0.002 * norm(itc), atol=1e-6)


@pytest.mark.parametrize("workers", [2, 4])
def test_fused_multi_gpu_emulation(workers):
    itc = _inputs(2, num_q=23)
    calls = []
    got = itm_rerank.itm_rerank_scores(
        itc, _scorer(calls), k=4, reference_gpus=workers, query_chunk=5
    )
    assert calls == [(5, 4)] * 4 + [(3, 4)]
    top = _topk(itc, 4)
    rows = np.arange(itc.shape[0])[:, None]
    itm = np.sin(7.0 * rows + 0.37 * top) * 3
    filled = np.repeat(itm.min(1, keepdims=True), itc.shape[1], 1)
    filled[rows, top] = itm
    c_hat = (itc - itc.min()) / (itc.max() - itc.min())
    block = 23 // workers + 1
    want = np.empty_like(got)
    for r in range(23):  # aptm §6.2: (x - m_k) / (1000 - m_k) + 0.002 W C_hat + (W - 1)
        k = r // block
        m_k = filled[k * block : (k + 1) * block].min()
        want[r] = (filled[r] - m_k) / (1000 - m_k) + 0.002 * workers * c_hat[r] + workers - 1
    np.testing.assert_allclose(got, want, atol=2e-6)
    # Every re-scored candidate ranks above every other gallery item of its row.
    rest = got.copy()
    rest[rows, top] = -np.inf
    assert np.all(got[rows, top].min(1) > rest.max(1))


def test_scores_feed_retrieval_metrics_and_errors():
    itc = _inputs(3)
    scores = itm_rerank.itm_rerank_scores(itc, _scorer([]), k=500)  # k clipped to G
    metrics = retrieval.retrieval_metrics(scores, np.arange(13) % 4, np.arange(40) % 4)
    assert set(metrics) == {"R1", "R5", "R10", "mAP", "mINP"}
    with pytest.raises(ValueError, match="without rows"):
        itm_rerank.itm_rerank_scores(itc[:5], _scorer([]), k=3, reference_gpus=4)
    with pytest.raises(ValueError, match="assembly"):
        itm_rerank.itm_rerank_scores(itc, _scorer([]), assembly="mean")
    with pytest.raises(ValueError, match="pair_scorer"):
        itm_rerank.itm_rerank_scores(itc, lambda q, g: np.zeros(3), k=3)
