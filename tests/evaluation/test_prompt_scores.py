import numpy as np
import pytest

from reid_jax.evaluation import prompt_scores


def test_predict_labels_takes_the_higher_prompt_of_each_pair_ties_to_zero():
    scores = np.array([[0.1, 0.9, 2.0, -1.0, 0.5, 0.5]])
    np.testing.assert_array_equal(prompt_scores.predict_labels(scores), [[1, 0, 0]])


def test_query_scores_against_a_loop():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 8))  # 5 images, 4 attributes
    queries = rng.integers(-1, 2, size=(6, 4))
    want = np.zeros((6, 5))
    for q in range(6):
        for n in range(5):
            for i in range(4):
                label = queries[q, i]
                if label >= 0:
                    want[q, n] += scores[n, 2 * i + label] - scores[n, 2 * i + 1 - label]
    np.testing.assert_allclose(prompt_scores.query_scores(scores, queries), want)


def test_an_image_whose_predictions_match_the_query_scores_positive():
    scores = np.array([[3.0, 1.0, 0.0, 2.0], [1.0, 3.0, 2.0, 0.0]])  # predicts [0, 1] / [1, 0]
    got = prompt_scores.query_scores(scores, np.array([[0, 1], [0, -1], [-1, -1]]))
    np.testing.assert_allclose(got, [[4.0, -4.0], [2.0, -2.0], [0.0, 0.0]])


@pytest.mark.parametrize(
    "scores, queries, message",
    [
        (np.zeros((2, 3)), np.zeros((1, 1)), r"\[N, 2A\]"),
        (np.zeros((2, 4)), np.zeros((1, 3)), r"\[Q, 2\]"),
        (np.zeros((2, 4)), np.array([[2, 0]]), "-1, 0 or 1"),
    ],
)
def test_query_scores_reject_bad_shapes_and_labels(scores, queries, message):
    with pytest.raises(ValueError, match=message):
        prompt_scores.query_scores(scores, queries)
