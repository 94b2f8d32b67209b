"""Attribute metrics against per-image / per-attribute loops (attribute_reid §7)."""

import numpy as np
import pytest

from reid_jax.evaluation import attributes


def _loop_reference(pred, gt):
    """DeepMAR-style evaluation written image by image."""
    num_attr = gt.shape[1]
    m_a = np.mean(
        [
            (
                np.sum(gt[:, j] & pred[:, j]) / np.sum(gt[:, j])
                + np.sum(~gt[:, j] & ~pred[:, j]) / np.sum(~gt[:, j])
            )
            / 2
            for j in range(num_attr)
        ]
    )
    accs, precs, recs = [], [], []
    for g, p in zip(gt, pred, strict=True):
        true, predicted = set(np.flatnonzero(g)), set(np.flatnonzero(p))
        if not true:
            continue  # images without any positive label are excluded
        inter = len(true & predicted)
        accs.append(inter / len(true | predicted))
        precs.append(inter / len(predicted) if predicted else 0.0)
        recs.append(inter / len(true))
    prec, rec = np.mean(precs), np.mean(recs)
    return {
        "mA": 100 * m_a,
        "accuracy": 100 * np.mean(accs),
        "precision": 100 * prec,
        "recall": 100 * rec,
        "F1": 100 * 2 * prec * rec / (prec + rec),
    }


def _case(seed):
    rng = np.random.default_rng(seed)
    gt = rng.random((40, 6)) < 0.4
    gt[:2] = False  # empty label sets
    gt[2:4, 0], gt[4:6, 0] = True, False  # every attribute has positives and negatives
    probs = np.clip(gt + rng.normal(0, 0.45, gt.shape), 0, 1)
    probs[6] = 0.0  # empty prediction set
    return probs, gt


@pytest.mark.parametrize("seed", range(3))
def test_deepmar_metrics_match_loops(seed):
    probs, gt = _case(seed)
    got = attributes.attribute_metrics(probs, gt.astype(int))
    want = _loop_reference(probs >= 0.5, gt)
    assert got == pytest.approx(want, abs=1e-9)
    logits = np.log(probs + 1e-9) - np.log1p(-probs + 1e-9)
    assert attributes.attribute_metrics(logits, gt.astype(int), threshold=0.0) == pytest.approx(
        attributes.attribute_metrics(logits >= 0, gt.astype(int))
    )


def test_epsilon_convention():
    probs, gt = _case(5)
    pred = probs >= 0.5
    got = attributes.attribute_metrics(pred, gt.astype(int), convention="epsilon")
    inter = (gt & pred).sum(1)
    eps = 1e-20
    prec_i, rec_i = inter / (pred.sum(1) + eps), inter / (gt.sum(1) + eps)
    assert got["accuracy"] == pytest.approx(100 * np.mean(inter / ((gt | pred).sum(1) + eps)))
    assert got["precision"] == pytest.approx(100 * prec_i.mean())
    assert got["F1"] == pytest.approx(100 * np.mean(2 * prec_i * rec_i / (prec_i + rec_i + eps)))


def test_attribute_errors_and_undefined_ma():
    gt = np.array([[1, 0], [1, 0]])
    with pytest.raises(ValueError, match="labels"):
        attributes.attribute_metrics(gt, np.array([[1, -1], [0, 1]]))
    assert np.isnan(attributes.attribute_metrics(gt, gt)["mA"])  # no negatives for attribute 0
    with pytest.raises(ValueError, match="empty label set"):
        attributes.attribute_metrics(gt, np.zeros((2, 2), int))


def test_market_official_accuracy():
    rng = np.random.default_rng(0)
    names = list(attributes.MARKET_BINARY_COLUMNS + attributes.MARKET_LOWER_COLOURS)
    names += list(attributes.MARKET_UPPER_COLOURS)[::-1]  # field order is free
    n = 30
    labels = rng.integers(0, 2, (n, len(names)))
    labels[:, names.index("age")] = rng.integers(0, 4, n)
    for colours in (attributes.MARKET_UPPER_COLOURS, attributes.MARKET_LOWER_COLOURS):
        cols = [names.index(c) for c in colours]
        labels[:, cols] = 0
        hot = rng.integers(0, len(colours), n)
        labels[np.arange(n), np.array(cols)[hot]] = 1
        labels[:3, cols] = 0  # identities without any colour flag: never correct
    pred = rng.integers(0, 2, (n, 12))
    pred[:, 2] = rng.integers(0, 4, n)
    pred[:, 10], pred[:, 11] = rng.integers(0, 8, n), rng.integers(0, 9, n)
    pred[:3, 10] = 0
    got = attributes.market_attribute_accuracy(pred, labels, names)
    for j, name in enumerate(attributes.MARKET_BINARY_COLUMNS):
        assert got[name] == pytest.approx(100 * np.mean(pred[:, j] == labels[:, names.index(name)]))
    for j, key, colours in (
        (10, "upper_colour", attributes.MARKET_UPPER_COLOURS),
        (11, "lower_colour", attributes.MARKET_LOWER_COLOURS),
    ):
        hits = [labels[i, names.index(colours[pred[i, j]])] == 1 for i in range(n)]
        assert got[key] == pytest.approx(100 * np.mean(hits))
    assert got["mean"] == pytest.approx(np.mean([v for k, v in got.items() if k != "mean"]))
    with pytest.raises(ValueError, match="column 11"):
        bad = pred.copy()
        bad[0, 11] = 9
        attributes.market_attribute_accuracy(bad, labels, names)
