import math

import numpy as np
import pytest

from reid_jax.evaluation.attribute_retrieval import attribute_prediction_scores


def test_scores_match_a_loop_with_a_softmax_group_and_unknowns():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6))
    queries = rng.integers(-1, 2, size=(5, 6))
    age = np.eye(3, dtype=int)[rng.integers(0, 3, 5)]
    queries[:, 2:5] = age
    queries[3, 2:5] = -1  # age not asked
    want = np.zeros((5, 4))
    for q in range(5):
        for n in range(4):
            total = 0.0
            for c in (0, 1, 5):
                p = 1 / (1 + math.exp(-logits[n, c]))
                if queries[q, c] == 1:
                    total += math.log(p)
                elif queries[q, c] == 0:
                    total += math.log(1 - p)
            if queries[q, 2] >= 0:
                z = logits[n, 2:5]
                asked = int(np.argmax(queries[q, 2:5]))
                total += z[asked] - math.log(sum(math.exp(v) for v in z))
            want[q, n] = total
    got = attribute_prediction_scores(logits, queries, softmax_groups=((2, 5),))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_confident_correct_predictions_rank_first():
    logits = np.array([[8.0, -8.0], [-8.0, 8.0]])
    scores = attribute_prediction_scores(logits, np.array([[1, 0], [0, 1]]))
    np.testing.assert_array_equal(np.argmax(scores, axis=1), [0, 1])


@pytest.mark.parametrize(
    "queries, message",
    [
        (np.array([[2, 0, 0, 0]]), "-1, 0 or 1"),
        (np.array([[0, 1, 1, 0]]), "one-hot or all -1"),
        (np.array([[0, -1, 1, 0]]), "one-hot or all -1"),
        (np.array([[0, 1, 0]]), "expected"),
    ],
)
def test_bad_queries_are_refused(queries, message):
    with pytest.raises(ValueError, match=message):
        attribute_prediction_scores(np.zeros((2, 4)), queries, softmax_groups=((1, 4),))
