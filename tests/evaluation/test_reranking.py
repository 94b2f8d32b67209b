"""k-reciprocal re-ranking against the per-row NumPy form of alignedreid §8.2."""

import numpy as np
import pytest

from evaluation import eval_reference_impls as ref
from reid_jax.evaluation import reranking


def _clustered(rng, num_q, num_g, dim=8, ids=10):
    labels = rng.integers(0, ids, num_q + num_g)
    x = rng.standard_normal((ids, dim))[labels] + 0.6 * rng.standard_normal((num_q + num_g, dim))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)).astype(np.float32)
    return d[:num_q, num_q:], d[:num_q, :num_q], d[num_q:, num_q:]


@pytest.mark.parametrize(
    "num_q,num_g,k1,k2",
    [
        (30, 50, 20, 6),  # default parameters, query segment shorter than one block
        (30, 50, 100, 6),  # k1 + 1 > N: every row is its own neighbourhood
        (30, 50, 5, 1),  # k2 == 1: no query expansion; round(5 / 2) = 2 (half to even)
        (30, 50, 7, 30),  # k2 > k1 + 1
        (45, 130, 20, 6),  # several blocks plus partial tail blocks in both segments
    ],
)
def test_matches_per_row_reference(num_q, num_g, k1, k2):
    rng = np.random.default_rng(num_q + num_g + k1)
    q_g, q_q, g_g = _clustered(rng, num_q, num_g)
    got = reranking.k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=0.3)
    want = ref.rerank_per_row(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=0.3)
    assert got.shape == (num_q, num_g) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("num_g,k1", [(70, 6), (140, 2)])
def test_ties_asymmetric_and_negative_inputs(num_g, k1):
    rng = np.random.default_rng(num_g)
    # Integer distances: many exact ties (stable order in both). (70, 6) ties at the k-th
    # candidate; (140, 2) also ties between block minima (whole-row fallback).
    q_g = rng.integers(1, 4, (20, num_g)).astype(np.float32)
    q_q = rng.integers(1, 4, (20, 20)).astype(np.float32)
    g_g = rng.integers(1, 4, (num_g, num_g)).astype(np.float32)  # asymmetric: read by columns
    np.fill_diagonal(q_q, 0)
    np.fill_diagonal(g_g, 0)
    got = reranking.k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=3, lambda_value=0.5)
    want = ref.rerank_per_row(q_g, q_q, g_g, k1=k1, k2=3, lambda_value=0.5)
    assert np.abs(got - want).max() <= 1e-5
    # The reference squares its inputs, so negated distances give the same result.
    neg = reranking.k_reciprocal_rerank(-q_g, -q_q, -g_g, k1=k1, k2=3, lambda_value=0.5)
    np.testing.assert_array_equal(neg, got)


def test_lambda_one_is_normalised_original_distance():
    rng = np.random.default_rng(1)
    q_g, q_q, g_g = _clustered(rng, 5, 9)
    got = reranking.k_reciprocal_rerank(q_g, q_q, g_g, lambda_value=1.0)
    row_max = np.maximum((q_q**2).max(0), (q_g**2).max(1))  # column maxima of the full matrix
    np.testing.assert_allclose(got, q_g**2 / row_max[:, None], rtol=1e-6)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shapes"):
        reranking.k_reciprocal_rerank(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        reranking.k_reciprocal_rerank(np.full((2, 3), np.nan), np.ones((2, 2)), np.ones((3, 3)))
