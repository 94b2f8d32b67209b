"""Tests for reid_jax.losses.matching against NumPy loops (aptm §4.2, §4.5, §8.2, §8.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.losses import matching


@pytest.fixture(scope="module")
def sample_many():
    """The sampler vmapped over keys, compiled once: (keys, sims, labels) -> 4 x [R, B]."""

    def sample(keys, sim_i2t, sim_t2i, labels, group_size):
        return jax.vmap(
            lambda k: matching.sample_itm_negatives(
                sim_i2t, sim_t2i, labels, key=k, group_size=group_size
            )
        )(keys)

    return jax.jit(sample, static_argnames="group_size")


_KEYS = jax.random.split(jax.random.key(0), 2000)


def _np_sampling_probs(sim, labels, group_size):
    """Loops: softmax over the group row + 1e-5, zero same identity, renormalise."""
    b = len(labels)
    probs = np.zeros((b, b))
    for r in range(b):
        g0 = (r // group_size) * group_size
        cols = range(g0, g0 + group_size)
        m = max(sim[r, c] for c in cols)
        z = sum(np.exp(sim[r, c] - m) for c in cols)
        for c in cols:
            if labels[c] != labels[r]:
                probs[r, c] = np.exp(sim[r, c] - m) / z + 1e-5
        if probs[r].sum() > 0:
            probs[r] /= probs[r].sum()
    return probs


def test_sampled_negatives_follow_the_masked_softmax(sample_many):
    rng = np.random.default_rng(0)
    b, group = 8, 4
    labels = np.array([0, 0, 1, 2, 3, 4, 4, 5])
    sim_i2t = rng.normal(scale=1.5, size=(b, b)).astype(np.float32)
    sim_t2i = rng.normal(scale=1.5, size=(b, b)).astype(np.float32)
    sim_i2t[4:, 4:] = 0.5  # ties: uniform over the other identities of group 1
    keys = _KEYS
    text_idx, image_idx, text_ok, image_ok = sample_many(
        keys, sim_i2t, sim_t2i, jnp.asarray(labels), group
    )
    assert np.all(text_ok) and np.all(image_ok)
    for got, sim in ((np.asarray(text_idx), sim_i2t), (np.asarray(image_idx), sim_t2i)):
        want = _np_sampling_probs(sim, labels, group)
        freq = np.stack([np.bincount(got[:, r], minlength=b) for r in range(b)]) / len(keys)
        np.testing.assert_allclose(freq, want, atol=0.04)
        assert np.all(freq[want == 0] == 0)  # same identity / other group: never drawn


def test_only_valid_negative_is_always_drawn(sample_many):
    labels = jnp.asarray([0, 0, 0, 1, 2, 2, 2, 3])  # rows of ids 0 / 2 have one negative each
    sim = jnp.zeros((8, 8)).at[:, 1].set(50.0)  # strongly prefers a same-identity column
    text_idx, image_idx, _, _ = sample_many(_KEYS, sim, sim, labels, 4)
    for got in (np.asarray(text_idx), np.asarray(image_idx)):
        assert np.all(got[:, :3] == 3) and np.all(got[:, 4:7] == 7)
        assert np.all(np.isin(got[:, 3], [0, 1, 2])) and np.all(np.isin(got[:, 7], [4, 5, 6]))


def test_groups_are_independent_of_each_other_and_of_the_group_count():
    rng = np.random.default_rng(2)
    labels = jnp.asarray(rng.integers(0, 3, size=8))
    sim_a = jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)
    sim_b = sim_a.at[4:, :].set(jnp.asarray(rng.normal(size=(4, 8)), jnp.float32))
    key = jax.random.key(3)
    full_a = matching.sample_itm_negatives(sim_a, sim_a.T, labels, key=key, group_size=4)
    full_b = matching.sample_itm_negatives(sim_b, sim_b.T, labels, key=key, group_size=4)
    alone = matching.sample_itm_negatives(
        sim_a[:4, :4], sim_a.T[:4, :4], labels[:4], key=key, group_size=4
    )
    for x, y, z in zip(full_a, full_b, alone, strict=True):
        np.testing.assert_array_equal(np.asarray(x)[:4], np.asarray(y)[:4])
        np.testing.assert_array_equal(np.asarray(x)[:4], np.asarray(z))
    groups = np.arange(8) // 4
    for idx in full_a[:2]:
        assert np.all(np.asarray(idx) // 4 == groups)


def test_group_without_other_identity_is_flagged_and_left_out_of_itm():
    labels = jnp.asarray([5, 5, 5, 5, 1, 2, 3, 3])  # group 0 holds one identity only
    sim = jnp.asarray(np.random.default_rng(4).normal(size=(8, 8)), jnp.float32)
    text_idx, image_idx, text_ok, image_ok = matching.sample_itm_negatives(
        sim, sim.T, labels, key=jax.random.key(5), group_size=4
    )
    np.testing.assert_array_equal(text_ok, [False] * 4 + [True] * 4)
    np.testing.assert_array_equal(image_ok, text_ok)
    np.testing.assert_array_equal(np.asarray(text_idx)[:4], [0, 1, 2, 3])
    np.testing.assert_array_equal(np.asarray(image_idx)[:4], [0, 1, 2, 3])
    assert np.all(np.asarray(labels)[np.asarray(text_idx)[4:]] != np.asarray(labels)[4:])
    logits = jnp.asarray(np.random.default_rng(6).normal(size=(24, 2)), jnp.float32)
    loss = matching.itm_loss(logits, group_size=4, image_valid=image_ok, text_valid=text_ok)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(
        loss, _np_itm(np.asarray(logits), np.asarray(image_ok), np.asarray(text_ok), 4), rtol=1e-6
    )


def _np_itm(logits, image_ok, text_ok, group):
    b = len(logits) // 3
    per_group = []
    for g in range(b // group):
        losses = []
        for part, label in ((0, 1), (1, 0), (2, 0)):
            for r in range(g * group, (g + 1) * group):
                if part == 1 and not image_ok[r] or part == 2 and not text_ok[r]:
                    continue
                losses.append(-_np_log_softmax(logits[part * b + r])[label])
        per_group.append(np.mean(losses))
    return np.mean(per_group)


def _np_log_softmax(row):
    m = max(row)
    return [x - m - np.log(sum(np.exp(y - m) for y in row)) for x in row]


def test_itm_loss_matches_numpy():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(24, 2)).astype(np.float32)
    image_ok = rng.random(8) > 0.3
    text_ok = rng.random(8) > 0.3
    got = matching.itm_loss(
        jnp.asarray(logits), group_size=4, image_valid=image_ok, text_valid=text_ok
    )
    np.testing.assert_allclose(got, _np_itm(logits, image_ok, text_ok, 4), rtol=1e-6)
    all_ok = np.ones(8, bool)
    np.testing.assert_allclose(
        matching.itm_loss(jnp.asarray(logits), group_size=4),
        _np_itm(logits, all_ok, all_ok, 4),
        rtol=1e-6,
    )


def test_itm_pair_indices_order():
    text_index, image_index = matching.itm_pair_indices(
        jnp.asarray([2, 0, 1]), jnp.asarray([1, 2, 0])
    )
    np.testing.assert_array_equal(text_index, [0, 1, 2, 0, 1, 2, 2, 0, 1])
    np.testing.assert_array_equal(image_index, [0, 1, 2, 1, 2, 0, 0, 1, 2])


def test_iam_prompts_distinct_per_group_and_stable_across_group_counts():
    key = jax.random.key(8)
    picks = np.asarray(matching.sample_iam_prompts(key=key, num_prompts=54, num_groups=4))
    assert picks.shape == (4, 5) and picks.dtype == np.int32
    assert all(len(set(row)) == 5 for row in picks) and picks.min() >= 0 and picks.max() < 54
    assert len({tuple(row) for row in picks}) > 1
    fewer = matching.sample_iam_prompts(key=key, num_prompts=54, num_groups=2)
    np.testing.assert_array_equal(picks[:2], fewer)


def _np_iam(logits, prompts, labels, eps):
    b = len(labels)
    groups, selected = prompts.shape
    group = b // groups
    per_group = []
    for g in range(groups):
        per_prompt = []
        for s in range(selected):
            k = prompts[g, s]
            attribute, which = divmod(int(k), 2)
            losses = []
            for r in range(g * group, (g + 1) * group):
                y = labels[r, attribute]
                if y < 0:
                    continue
                target = 1 if y == which else 0  # the image has the value prompt k states
                logp = _np_log_softmax(logits[r, s])
                soft = [eps / 2, eps / 2]
                soft[target] += 1 - eps
                losses.append(-(soft[0] * logp[0] + soft[1] * logp[1]))
            per_prompt.append(np.mean(losses) if losses else 0.0)
        per_group.append(np.mean(per_prompt))
    return np.mean(per_group)


@pytest.mark.parametrize("eps", [0.0, 0.4])
def test_iam_loss_matches_numpy(eps):
    rng = np.random.default_rng(9)
    labels = rng.integers(-1, 2, size=(6, 4))
    labels[3:, 1] = -1  # prompts 2 and 3 have no valid image in group 1
    prompts = np.array([[0, 3, 5], [2, 3, 7]], np.int32)
    logits = rng.normal(size=(6, 3, 2)).astype(np.float32)
    got = matching.iam_loss(
        jnp.asarray(logits), jnp.asarray(prompts), jnp.asarray(labels), label_smoothing=eps
    )
    np.testing.assert_allclose(got, _np_iam(logits, prompts, labels, eps), rtol=1e-5)


def test_sampling_on_a_sharded_global_batch_matches_one_device():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 3, size=8)
    sim = rng.normal(size=(8, 8)).astype(np.float32)
    key = jax.random.key(11)
    want = matching.sample_itm_negatives(sim, sim.T, labels, key=key, group_size=4)
    got = matching.sample_itm_negatives(
        jax.device_put(sim, rows),
        jax.device_put(np.ascontiguousarray(sim.T), rows),
        jax.device_put(labels, rows),
        key=key,
        group_size=4,
    )
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)
