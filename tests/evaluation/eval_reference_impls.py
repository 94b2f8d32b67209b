"""Straightforward NumPy re-derivations used as references by the evaluation tests/benchmarks.

Written independently of the library from the method descriptions (alignedreid §7-8,
ssan §5.3, aptm §6.3): plain per-query / per-row loops, full stable argsorts, explicit junk
filtering. Deliberately slow; never import this from `reid_jax`.
"""

from __future__ import annotations

import numpy as np


def per_query_text_metrics(sim, query_ids, gallery_ids, ks, ap_mode):
    """IRRA/SSAN-style metrics with one stable argsort per query (ties -> lower index)."""
    hits, aps, inps = [], [], []
    for i in range(sim.shape[0]):
        order = np.argsort(-sim[i], kind="stable")
        match = gallery_ids[order] == query_ids[i]
        hits.append([bool(match[:k].any()) for k in ks])
        if not match.any():
            continue
        r = np.flatnonzero(match)
        n = np.arange(1, len(r) + 1)
        prec = n / (r + 1)
        if ap_mode == "step":
            aps.append(prec.mean())
        else:
            prev = np.array([(j - 1) / rr if rr > 0 else 1.0 for j, rr in zip(n, r, strict=True)])
            aps.append(((prev + prec) / 2).mean())
        inps.append(len(r) / (r[-1] + 1))
    out = {f"R{k}": 100 * float(np.mean([h[j] for h in hits])) for j, k in enumerate(ks)}
    out["mAP"] = 100 * float(np.mean(aps)) if aps else float("nan")
    out["mINP"] = 100 * float(np.mean(inps)) if inps else float("nan")
    return out


def sklearn_style_ap(y_true, y_score, trapezoid):
    """scikit-learn's average_precision_score re-derived: thresholds at distinct scores.

    trapezoid=True: sklearn <= 0.18 (area under the PR curve, trapezoids from the
    (recall 0, precision 1) point); False: sklearn >= 0.19 (sum of recall steps x precision).
    """
    order = np.argsort(-y_score, kind="stable")
    y_true, y_score = y_true[order], y_score[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(y_score) != 0), len(y_score) - 1]
    tps = np.cumsum(y_true)[last_of_group]
    precision = tps / (last_of_group + 1)
    recall = tps / tps[-1]
    d_recall = np.diff(np.r_[0.0, recall])
    if not trapezoid:
        return float(np.sum(d_recall * precision))
    return float(np.sum(d_recall * (precision + np.r_[1.0, precision[:-1]]) / 2))


def per_query_market_metrics(dist, qids, gids, qcams, gcams, ks, ap_mode):
    """open-reid cmc (first_match_break) + sklearn AP, one query at a time."""
    hits, aps = [], []
    for i in range(dist.shape[0]):
        keep = (gids != -1) & ~((gids == qids[i]) & (gcams == qcams[i]))
        d, g = dist[i][keep], gids[keep]
        match = g == qids[i]
        if not match.any():
            continue
        order = np.argsort(d, kind="stable")
        first = np.flatnonzero(match[order])[0]
        hits.append([first < k for k in ks])
        aps.append(sklearn_style_ap(match.astype(float), -d, ap_mode == "trapezoid"))
    out = {f"R{k}": 100 * float(np.mean([h[j] for h in hits])) for j, k in enumerate(ks)}
    out["mAP"] = 100 * float(np.mean(aps))
    return out


def _reciprocal(rank, i, k):
    fwd = rank[i, : k + 1]
    rows_with_i = np.nonzero(rank[fwd, : k + 1] == i)[0]
    return fwd[rows_with_i]


def rerank_per_row(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking as alignedreid §8.2 describes it, one row at a time.

    The structure of the reference: dense N x N matrices, a full (stable) argsort, a Python
    loop over rows and their candidates, an inverted index of V's columns for the Jaccard term.
    """
    q_g = np.asarray(q_g_dist, np.float32)
    q_q = np.asarray(q_q_dist, np.float32)
    g_g = np.asarray(g_g_dist, np.float32)
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    full = np.power(full, 2).astype(np.float32)
    orig = np.transpose(full / np.max(full, axis=0))  # column maxima, then transpose
    del full
    num = orig.shape[0]
    rank = np.argsort(orig, axis=1, kind="stable").astype(np.int32)
    half = int(np.around(k1 / 2.0))
    v = np.zeros_like(orig)
    for i in range(num):
        recip = _reciprocal(rank, i, k1)
        expanded = recip
        for c in recip:
            c_recip = _reciprocal(rank, c, half)
            if len(np.intersect1d(c_recip, recip)) > 2.0 / 3 * len(c_recip):
                expanded = np.append(expanded, c_recip)
        expanded = np.unique(expanded)
        w = np.exp(-orig[i, expanded])
        v[i, expanded] = w / np.sum(w)
    orig = orig[:num_q]
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(num):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
        del v_qe
    del rank
    inverted = [np.nonzero(v[:, t])[0] for t in range(num)]
    out = np.zeros((num_q, num), np.float32)
    for i in range(num_q):
        min_sum = np.zeros(num, np.float32)
        for t in np.nonzero(v[i])[0]:
            rows = inverted[t]
            min_sum[rows] += np.minimum(v[i, t], v[rows, t])
        jaccard = 1 - min_sum / (2.0 - min_sum)
        out[i] = jaccard * (1 - lambda_value) + orig[i] * lambda_value
    return out[:, num_q:]
