"""Attribute-recognition metrics (attribute_reid §7; aptm §6.4 for PA-100K).

* `attribute_metrics`: label-based mA and instance-based accuracy / precision / recall / F1.
* `market_attribute_accuracy`: the official Market-1501 attribute-recognition metric
  (per-attribute accuracy over 12 columns, colour columns as class indices; §7.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONVENTIONS = ("deepmar", "epsilon")
_EPS = 1e-20

MARKET_BINARY_COLUMNS = tuple("gender hair age up down clothes hat backpack bag handbag".split())
# Class order of the official script's colour columns (differs from the .mat field order).
MARKET_UPPER_COLOURS = tuple(
    "upblack upwhite upred uppurple upgray upblue upgreen upyellow".split()
)
MARKET_LOWER_COLOURS = tuple(
    "downblack downwhite downpink downgray downblue downgreen downbrown downyellow "
    "downpurple".split()
)


def _binary(name: str, x: np.ndarray) -> np.ndarray:
    bad = ~np.isin(x, (0, 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{i}, {j}] = {x[i, j]!r}; expected 0 or 1")
    return x.astype(bool)


def attribute_metrics(
    pred: np.ndarray,
    labels: np.ndarray,
    *,
    threshold: float = 0.5,
    convention: str = "deepmar",
) -> dict[str, float]:
    """Label-based mA and instance-based metrics of multi-label attribute predictions.

    With G_i / P_i the sets of true / predicted attributes of image i (attribute_reid §7):
      mA = mean over attributes of (TP / #positives + TN / #negatives) / 2;
      "deepmar" (the reference evaluation, default): images with G_i empty are excluded;
        accuracy = mean |G ∩ P| / |G ∪ P|, precision = mean |G ∩ P| / |P| (0 when P_i is
        empty), recall = mean |G ∩ P| / |G|, F1 = 2 prec rec / (prec + rec) from the averaged
        precision and recall. An attribute without positives or negatives makes mA NaN; if
        every image has an empty label set a ValueError is raised.
      "epsilon" (later code bases): every image counts, every denominator gets +1e-20, F1 is
        the mean of per-image F1 values.

    Args:
      pred: [N, A] {0, 1} predictions, or scores binarised as pred >= threshold
        (probabilities: 0.5; logits: pass threshold=0).
      labels: [N, A] {0, 1} ground truth (mask unknown labels out beforehand).
      threshold: binarisation threshold for non-binary `pred`.
      convention: "deepmar" or "epsilon".

    Returns:
      {'mA', 'accuracy', 'precision', 'recall', 'F1'}: Python floats in percent.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.ndim != 2 or pred.shape != labels.shape:
        raise ValueError(f"pred {pred.shape} and labels {labels.shape} must both be [N, A]")
    gt = _binary("labels", labels)
    pr = pred.astype(bool) if pred.dtype == bool else np.asarray(pred >= threshold)
    eps = _EPS if convention == "epsilon" else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        pos, neg = gt.sum(0), (~gt).sum(0)
        tpr = (gt & pr).sum(0) / (pos + eps)
        tnr = (~gt & ~pr).sum(0) / (neg + eps)
        m_a = float(np.mean((tpr + tnr) / 2))
        inter = (gt & pr).sum(1).astype(np.float64)
        union, n_true, n_pred = (gt | pr).sum(1), gt.sum(1), pr.sum(1)
        if convention == "deepmar":
            keep = n_true > 0
            if not keep.any():
                raise ValueError("every image has an empty label set; instance metrics undefined")
            inter, union, n_true, n_pred = inter[keep], union[keep], n_true[keep], n_pred[keep]
            acc = float(np.mean(inter / union))
            prec = np.mean(np.where(n_pred > 0, inter / np.maximum(n_pred, 1), 0.0))
            rec = np.mean(inter / n_true)
            f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else float("nan")
        else:
            acc = float(np.mean(inter / (union + eps)))
            prec_i, rec_i = inter / (n_pred + eps), inter / (n_true + eps)
            prec, rec = np.mean(prec_i), np.mean(rec_i)
            f1 = np.mean(2 * prec_i * rec_i / (prec_i + rec_i + eps))
    return {
        "mA": 100.0 * m_a,
        "accuracy": 100.0 * acc,
        "precision": 100.0 * float(prec),
        "recall": 100.0 * float(rec),
        "F1": 100.0 * float(f1),
    }


def market_attribute_accuracy(
    pred: np.ndarray, labels: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """Official Market-1501 attribute-recognition accuracy (attribute_reid §7.3).

    Each gallery image carries its identity's labels. Columns 0-9 of `pred` are gender, hair,
    age, up, down, clothes, hat, backpack, bag, handbag in the parsed 0-based coding (the
    file's 1/2 and 1..4 codes minus 1, as `AttributeRecord` stores them); column 10 is the
    upper-body colour class (0 black, 1 white, 2 red, 3 purple, 4 gray, 5 blue, 6 green,
    7 yellow) and column 11 the lower-body colour class (0 black, 1 white, 2 pink, 3 gray,
    4 blue, 5 green, 6 brown, 7 yellow, 8 purple), i.e. the official 1-based classes minus 1.
    A colour prediction is correct iff that colour's flag is set, so identities without any
    colour flag can never be scored correct on that column (as in the official script).

    Args:
      pred: [N, 12] int predictions as above.
      labels: [N, F] int parsed labels (binary flags 0/1, age 0..3).
      names: the F field names of `labels` (Market attribute names, any order).

    Returns:
      {'gender', ..., 'handbag', 'upper_colour', 'lower_colour', 'mean'}: percent.
    """
    pred, labels = np.asarray(pred), np.asarray(labels)
    names = list(names)
    if pred.ndim != 2 or pred.shape[1] != 12 or labels.shape != (pred.shape[0], len(names)):
        raise ValueError(f"pred {pred.shape} must be [N, 12], labels {labels.shape} [N, F]")
    missing = [
        n
        for n in MARKET_BINARY_COLUMNS + MARKET_UPPER_COLOURS + MARKET_LOWER_COLOURS
        if n not in names
    ]
    if missing:
        raise ValueError(f"labels lack Market attribute fields {missing}")
    column = {n: labels[:, names.index(n)] for n in names}
    out = {}
    for j, name in enumerate(MARKET_BINARY_COLUMNS):
        out[name] = float(np.mean(pred[:, j] == column[name]))
    for j, key, colours in (
        (10, "upper_colour", MARKET_UPPER_COLOURS),
        (11, "lower_colour", MARKET_LOWER_COLOURS),
    ):
        cls = pred[:, j]
        if cls.min(initial=0) < 0 or cls.max(initial=0) >= len(colours):
            raise ValueError(f"pred column {j} ({key}) must be in [0, {len(colours)})")
        flags = np.stack([column[c] for c in colours], axis=1)  # [N, C]
        out[key] = float(np.mean(flags[np.arange(len(cls)), cls] == 1))
    out = {k: 100.0 * v for k, v in out.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out
