"""Tests for reid_jax.losses.ranking against NumPy re-derivations of ssan §3.2-§3.4.

The compound ranking (CR) tests are deterministic by construction: the similarity matrices
are designed so that every anchor has at most one semi-hard candidate per direction (the
reference helper asserts it), then turned into features whose cosine matrix is exactly the
design.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.losses import ranking

# --------------------------------------------------------------------------- NumPy references


def _np_cosine(a, b, eps=1e-8):
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + eps)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + eps)
    return a @ b.T


def _np_candidates(s, labels, margin, i):
    return [
        j
        for j in range(s.shape[1])
        if labels[j] != labels[i] and s[i, i] - margin < s[i, j] < s[i, i]
    ]


def _np_ranking_triplets(sim, labels, margins, gate):
    """Triplets (direction, anchor, negative) of R(S, m, g); at most one candidate per anchor."""
    triplets = []
    for direction, s in (("image", sim), ("caption", sim.T)):
        for i in range(s.shape[0]):
            if not gate[i]:
                continue
            cands = _np_candidates(s, labels, margins[i], i)
            assert len(cands) <= 1, f"design error: {direction} anchor {i} has {cands}"
            triplets += [(direction, i, j) for j in cands]
    return triplets


def _np_ranking_loss(sim, labels, margins, gate):
    total = 0.0
    for direction, i, j in _np_ranking_triplets(sim, labels, margins, gate):
        s = sim if direction == "image" else sim.T
        total += max(0.0, margins[i] - s[i, i] + s[i, j])
    return total


def _np_adaptive_margin(diag, partner_diag, epoch, epoch_begin=5, alpha=0.2, threshold=0.16):
    b = len(diag)
    if epoch < epoch_begin:
        return np.full(b, alpha / 2), np.ones(b, bool)
    lam = np.array(
        [
            min(abs(p) / abs(d), 1.0) if d != 0 else (1.0 if p != 0 else 0.0)
            for d, p in zip(diag, partner_diag, strict=True)
        ]
    )
    margins = (lam + 1) * alpha / 2
    return margins, margins >= threshold


def _np_compound_parts(sim, partner_sim, labels, epoch):
    b = len(labels)
    weak_m, weak_g = _np_adaptive_margin(np.diag(sim), np.diag(partner_sim), epoch)
    strong = (sim, np.full(b, 0.2), np.ones(b, bool))
    weak = (partner_sim, weak_m, weak_g)
    return strong, weak


def _np_compound_loss(sim, partner_sim, labels, epoch):
    (s, sm, sg), (w, wm, wg) = _np_compound_parts(sim, partner_sim, labels, epoch)
    return _np_ranking_loss(s, labels, sm, sg) + 0.1 * _np_ranking_loss(w, labels, wm, wg)


# --------------------------------------------------------------------------- designed batch

LABELS = np.array([0, 0, 1, 1, 2, 3, 4, 5])


def _designed_sims():
    """S and S' (rows images, columns captions) with <= 1 semi-hard candidate per anchor."""
    sim = np.zeros((8, 8))
    np.fill_diagonal(sim, [0.5, 0.55, 0.5, 0.6, 0.45, 0.5, 0.5, 0.52])
    sim[0, 2] = 0.4  # semi-hard for image 0 and for caption 2
    sim[0, 1] = 0.45  # semi-hard value but same identity: excluded
    sim[1, 3] = 0.7  # hard negative (>= S_ii) for image 1 and caption 3: excluded
    sim[2, 4] = 0.55  # hard for image 2 and caption 4
    sim[5, 6] = 0.42  # semi-hard for image 5 and caption 6
    sim[7, 0] = 0.35  # semi-hard for image 7 and caption 0
    # Anchor 4 has no semi-hard negative in either direction.
    partner = np.full((8, 8), -0.05)
    # lambda = |S'_ii| / |S_ii|: 0.9, 0.36 (gated), 1.1 (clipped), 0.7, 0.22 (gated),
    # 0.5 (gated), 0.8 (negative diagonal), 0.67.
    np.fill_diagonal(partner, [0.45, 0.2, 0.55, 0.42, 0.1, 0.25, -0.4, 0.35])
    partner[1, 4] = 0.15  # semi-hard for image 1 before the switch only (gated after)
    partner[3, 1] = 0.12  # semi-hard for caption 1 before the switch only (gated after)
    partner[5, 7] = 0.2  # image 5: before only (gated after); caption 7: after only (m' grows)
    partner[2, 5] = 0.18  # caption 5: before only (gated after)
    partner[0, 3] = 0.3  # image 0 and caption 3: after the switch only (margin 0.1 -> 0.19)
    partner[6, 2] = -0.45  # image 6 with a negative positive similarity: both epochs
    return sim, partner


def _features_from_sims(sim, partner):
    """Unit features V, T, T' with cos(V, T) = sim and cos(V, T') = partner exactly."""
    b = sim.shape[0]
    image = np.concatenate([np.eye(b), np.zeros((b, 2))], axis=1)
    text = np.zeros((b, b + 2))
    text[:, :b] = sim.T
    text[:, b] = np.sqrt(1.0 - np.sum(sim**2, axis=0))
    part = np.zeros((b, b + 2))
    part[:, :b] = partner.T
    part[:, b + 1] = np.sqrt(1.0 - np.sum(partner**2, axis=0))
    return [jnp.asarray(x, jnp.float32) for x in (image, text, part)]


@pytest.fixture(scope="module")
def designed():
    sim, partner = _designed_sims()
    return sim, partner, _features_from_sims(sim, partner)


# --------------------------------------------------------------------------- tests


def test_cosine_similarity_matrix_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7)).astype(np.float32)
    b = rng.normal(size=(5, 7)).astype(np.float32) * 10
    a[3] = 0.0  # zero row: x / (0 + eps) = 0, no NaN
    got = ranking.cosine_similarity_matrix(jnp.asarray(a), jnp.asarray(b))
    assert got.dtype == jnp.float32 and got.shape == (5, 5)
    np.testing.assert_allclose(got, _np_cosine(a.astype(np.float64), b), atol=1e-6)
    low = ranking.cosine_similarity_matrix(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b))
    assert low.dtype == jnp.float32


def test_features_reproduce_the_design(designed):
    sim, partner, (image, text, part) = designed
    np.testing.assert_allclose(ranking.cosine_similarity_matrix(image, text), sim, atol=1e-6)
    np.testing.assert_allclose(ranking.cosine_similarity_matrix(image, part), partner, atol=1e-6)


def test_semi_hard_strict_boundaries_and_exclusions():
    # Dyadic values: S_ii - m and the boundary entries are exact in float32.
    sim = np.zeros((6, 6), np.float32)
    np.fill_diagonal(sim, 0.75)
    labels = np.array([0, 1, 2, 3, 3, 4])
    margins = np.full(6, 0.25, np.float32)
    sim[0, 1], sim[0, 2], sim[0, 3] = 0.5, 0.75, 0.625  # lower bound, upper bound, inside
    sim[1, 0] = 0.5 + 2.0**-20  # just inside the lower bound
    sim[2, 5] = 0.75 - 2.0**-20  # just inside the upper bound
    sim[3, 4] = 0.625  # same identity: excluded
    sim[3, 0] = 0.875  # hard negative: excluded
    gate = np.array([True, True, True, True, False, True])
    sim[4, 1] = 0.625  # would be a candidate, but image anchor 4 is gated out
    hinges, negative, found = ranking.semi_hard_anchor_hinges(
        jnp.asarray(sim),
        jnp.asarray(labels),
        jnp.asarray(margins),
        jnp.asarray(gate),
        key=jax.random.key(0),
    )
    np.testing.assert_array_equal(found, [True, True, True, False, False, False])
    np.testing.assert_array_equal(np.asarray(negative)[:3], [3, 0, 5])
    np.testing.assert_allclose(hinges, [0.125, 2.0**-20, 0.25 - 2.0**-20, 0, 0, 0], atol=0)
    total = ranking.semi_hard_ranking_loss(
        jnp.asarray(sim),
        jnp.asarray(labels),
        jnp.asarray(margins),
        jnp.asarray(gate),
        key=jax.random.key(1),
    )
    expected = _np_ranking_loss(sim.astype(np.float64), labels, margins, gate)
    np.testing.assert_allclose(total, expected, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semi_hard_vmap_matches_numpy_loop_with_same_noise(seed):
    rng = np.random.default_rng(seed)
    b = 12
    sim = rng.uniform(-0.2, 0.8, size=(b, b)).astype(np.float32)
    labels = rng.integers(0, 5, size=b)
    margins = rng.uniform(0.1, 0.4, size=b).astype(np.float32)
    gate = rng.random(b) < 0.8
    key = jax.random.key(seed)
    hinges, negative, found = ranking.semi_hard_anchor_hinges(
        jnp.asarray(sim), jnp.asarray(labels), jnp.asarray(margins), jnp.asarray(gate), key=key
    )
    noise = np.asarray(jax.random.gumbel(key, (b, b), jnp.float32))
    for i in range(b):
        cands = _np_candidates(sim, labels, margins[i], i) if gate[i] else []
        assert bool(found[i]) == bool(cands)
        if cands:
            j = cands[int(np.argmax(noise[i, cands]))]
            assert int(negative[i]) == j
            np.testing.assert_allclose(hinges[i], margins[i] - sim[i, i] + sim[i, j], atol=1e-6)
        else:
            assert float(hinges[i]) == 0.0
    assert np.any(found) and not np.all(found)


def test_semi_hard_pick_is_uniform():
    # Anchor 0 has four semi-hard candidates (columns 1-4) and one hard negative (column 5).
    sim = np.zeros((6, 6), np.float32)
    np.fill_diagonal(sim, 0.75)
    sim[0, 1:] = [0.3, 0.4, 0.5, 0.6, 0.9]
    labels = jnp.arange(6)
    margins = jnp.full((6,), 0.5)
    gate = jnp.ones((6,), bool)
    num_draws = 4000
    keys = jax.random.split(jax.random.key(42), num_draws)
    pick = jax.jit(
        jax.vmap(lambda k: ranking.semi_hard_anchor_hinges(sim, labels, margins, gate, key=k))
    )
    hinges, negative, found = pick(keys)
    assert bool(jnp.all(found[:, 0]))
    counts = np.bincount(np.asarray(negative[:, 0]), minlength=6)
    assert counts[0] == counts[5] == 0
    expected = num_draws / 4
    chi_square = np.sum((counts[1:5] - expected) ** 2 / expected)
    assert chi_square < 16.27  # chi2(3 dof) at p = 0.001
    np.testing.assert_allclose(
        hinges[:, 0], 0.5 - 0.75 + sim[0][np.asarray(negative[:, 0])], atol=1e-6
    )


def test_adaptive_margin_before_and_after_switch():
    diag = np.array([0.5, 0.5, 0.4, -0.5, 0.0, 0.0, 0.5, 0.5], np.float32)
    partner = np.array([0.2, 0.6, 0.36, 0.35, 0.3, 0.0, 0.295, 0.305], np.float32)
    fn = jax.jit(lambda d, p, e: ranking.adaptive_margin(d, p, epoch=e))
    for epoch in [0, 4, 5, 9]:
        margins, gate = fn(diag, partner, jnp.asarray(epoch, jnp.int32))
        want_m, want_g = _np_adaptive_margin(diag.astype(np.float64), partner, epoch)
        np.testing.assert_allclose(margins, want_m, rtol=1e-6)
        np.testing.assert_array_equal(gate, want_g)
        assert margins.dtype == jnp.float32 and gate.dtype == jnp.bool_
    grad = jax.grad(lambda d, p: jnp.sum(fn(d, p, 9)[0]), argnums=(0, 1))(diag, partner)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in grad)


@pytest.mark.parametrize("epoch", [2, 7])
def test_compound_ranking_loss_designed_batch(designed, epoch):
    sim, partner, (image, text, part) = designed
    expected = _np_compound_loss(sim, partner, LABELS, epoch)
    for seed in range(3):
        got = ranking.compound_ranking_loss(
            image,
            text,
            part,
            jnp.asarray(LABELS),
            key=jax.random.key(seed),
            epoch=jnp.asarray(epoch),
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_designed_batch_exercises_every_case(designed):
    sim, partner, _ = designed
    (s, sm, sg), _ = _np_compound_parts(sim, partner, LABELS, epoch=7)
    strong = _np_ranking_triplets(s, LABELS, sm, sg)
    assert 4 not in [i for _, i, _ in strong]  # an anchor without any candidate
    _, (_, early_m, early_g) = _np_compound_parts(sim, partner, LABELS, epoch=2)
    _, (_, late_m, late_g) = _np_compound_parts(sim, partner, LABELS, epoch=7)
    assert np.all(early_g) and list(np.flatnonzero(~late_g)) == [1, 4, 5]
    early = _np_ranking_triplets(partner, LABELS, early_m, early_g)
    late = _np_ranking_triplets(partner, LABELS, late_m, late_g)
    # Gated anchors had candidates in both directions before the switch.
    assert {("image", 1, 4), ("caption", 1, 3), ("image", 5, 7), ("caption", 5, 2)} <= set(early)
    assert not any(i in (1, 4, 5) for _, i, _ in late)
    # The larger adaptive margin admits new triplets.
    assert {("image", 0, 3), ("caption", 3, 0), ("caption", 7, 5)} <= set(late) - set(early)
    # With the gate forced open the weak term differs, so gating is observable.
    open_loss = _np_ranking_loss(partner, LABELS, late_m, np.ones(8, bool))
    assert abs(open_loss - _np_ranking_loss(partner, LABELS, late_m, late_g)) > 1e-3


def test_compound_ranking_gradients_skip_margins(designed):
    """Gradient = that of the loss with the mined triplets and margins frozen as constants."""
    sim, partner, feats = designed
    epoch = 7
    strong, weak = _np_compound_parts(sim, partner, LABELS, epoch)
    frozen = []
    for weight, (s, m, g), second in ((1.0, strong, 1), (0.1, weak, 2)):
        for direction, i, j in _np_ranking_triplets(s, LABELS, m, g):
            frozen.append((weight, second, direction == "image", i, j, float(m[i])))

    def frozen_loss(image, text, part):
        norm = lambda x: x / (jnp.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
        sims = {1: norm(image) @ norm(text).T, 2: norm(image) @ norm(part).T}
        total = 0.0
        for weight, which, image_anchor, i, j, m in frozen:
            s = sims[which] if image_anchor else sims[which].T
            total += weight * jax.nn.relu(m - s[i, i] + s[i, j])
        return total

    def loss(image, text, part):
        return ranking.compound_ranking_loss(
            image, text, part, jnp.asarray(LABELS), key=jax.random.key(3), epoch=jnp.asarray(epoch)
        )

    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*feats)
    want = jax.jit(jax.grad(frozen_loss, argnums=(0, 1, 2)))(*feats)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)
        assert float(jnp.abs(g).max()) > 0.0  # features and partner features get gradient


def test_compound_ranking_accepts_part_features(designed):
    sim, partner, feats = designed
    parts = [x.reshape(8, 2, 5) for x in feats]  # flattened per sample: the same cosines
    got = ranking.compound_ranking_loss(
        *parts, jnp.asarray(LABELS), key=jax.random.key(0), epoch=jnp.asarray(7)
    )
    np.testing.assert_allclose(got, _np_compound_loss(sim, partner, LABELS, 7), rtol=1e-5)


def test_compound_ranking_vmaps_over_groups(designed):
    """Per-device groups ([G, B, ...] + one key per group, STYLE) equal per-group calls."""
    sim, partner, feats = designed
    grouped = [jnp.stack([x, x[::-1]]) for x in feats]  # group 2: the batch reversed
    labels = jnp.stack([jnp.asarray(LABELS), jnp.asarray(LABELS[::-1])])
    keys = jax.random.split(jax.random.key(5), 2)
    got = jax.vmap(lambda i, t, p, y, k: ranking.compound_ranking_loss(i, t, p, y, key=k, epoch=7))(
        *grouped, labels, keys
    )
    expected = _np_compound_loss(sim, partner, LABELS, 7)  # reversing permutes anchors only
    np.testing.assert_allclose(got, [expected, expected], rtol=1e-5)
