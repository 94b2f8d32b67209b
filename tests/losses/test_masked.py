"""Tests for reid_jax.losses.masked against NumPy loops (aptm §4.3, §4.5, §8.3)."""

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.losses import masked


def _np_ce(logits_row, label):
    m = max(logits_row)
    return -(logits_row[label] - m - np.log(sum(np.exp(x - m) for x in logits_row)))


def test_mlm_loss_matches_numpy_with_ignored_positions_and_groups():
    rng = np.random.default_rng(0)
    b, m, v, group = 6, 4, 7, 3
    logits = rng.normal(size=(b, m, v)).astype(np.float32)
    labels = rng.integers(0, v, size=(b, m))
    labels[rng.random((b, m)) < 0.3] = -100
    labels[3:] = -100  # group 1 has nothing to predict: contributes 0
    labels[0, 0] = 0  # [PAD] is a legitimate label (aptm §1.6)
    got = masked.mlm_loss(jnp.asarray(logits), jnp.asarray(labels), group_size=group)
    per_group = []
    for g in range(b // group):
        losses = [
            _np_ce(logits[r, p], labels[r, p])
            for r in range(g * group, (g + 1) * group)
            for p in range(m)
            if labels[r, p] != -100
        ]
        per_group.append(np.mean(losses) if losses else 0.0)
    np.testing.assert_allclose(got, np.mean(per_group), rtol=1e-6)


def test_mam_image_selection_picks_only_positive_images():
    # K = 2 attributes -> 4 prompts; group size 3.
    labels = np.array(
        [
            [1, -1],  # group 0
            [1, 0],
            [0, -1],
            [-1, -1],  # group 1: nothing known -> every prompt invalid
            [-1, -1],
            [-1, -1],
        ]
    )
    draws = jax.vmap(lambda k: masked.select_mam_images(jnp.asarray(labels), key=k, group_size=3))(
        jax.random.split(jax.random.key(0), 300)
    )
    index, valid = np.asarray(draws[0]), np.asarray(draws[1])
    # Y = [1 - y0, y0, 1 - y1, y1]; prompt 0 positive: image 2; prompt 1: images 0, 1;
    # prompt 2: image 1; prompt 3: none (-1 is never positive).
    np.testing.assert_array_equal(valid[0], [[True, True, True, False], [False] * 4])
    assert np.all(index[:, 0, 0] == 2) and np.all(index[:, 0, 2] == 1)
    assert set(index[:, 0, 1]) == {0, 1}  # uniform over both positives
    assert 0.35 < np.mean(index[:, 0, 1] == 0) < 0.65
    assert np.all(index[:, 1] >= 3)  # indices are global and stay inside the group


def test_mam_loss_matches_numpy_with_validity():
    rng = np.random.default_rng(1)
    g, a, m, v = 2, 4, 2, 5
    logits = rng.normal(size=(g, a, m, v)).astype(np.float32)
    labels = rng.integers(0, v, size=(g, a, m))
    labels[0, 1, 1] = -100
    valid = np.array([[True, True, False, True], [False] * 4])
    got = masked.mam_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid))
    per_group = []
    for gi in range(g):
        losses = [
            _np_ce(logits[gi, k, p], labels[gi, k, p])
            for k in range(a)
            for p in range(m)
            if valid[gi, k] and labels[gi, k, p] != -100
        ]
        per_group.append(np.mean(losses) if losses else 0.0)
    np.testing.assert_allclose(got, np.mean(per_group), rtol=1e-6)


def test_masked_losses_have_zero_gradient_on_ignored_entries():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 4)), jnp.float32)
    labels = jnp.asarray([[1, -100, 2], [-100, -100, 3]])
    grad = np.asarray(jax.grad(lambda x: masked.mlm_loss(x, labels, group_size=1))(logits))
    assert np.all(grad[0, 1] == 0) and np.all(grad[1, :2] == 0) and np.any(grad[1, 2] != 0)
    valid = jnp.asarray([[True, False]])
    grad = jax.grad(lambda x: masked.mam_loss(x, labels[None], valid))(logits[None])
    grad = np.asarray(grad)[0]
    assert np.all(grad[1] == 0) and np.all(grad[0, 1] == 0) and np.any(grad[0, 0] != 0)
