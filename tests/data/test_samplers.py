"""Tests for reid_jax.data.samplers: epoch shuffling, PK batches, shard slicing, partners."""

import pickle

import numpy as np
import pytest

from reid_jax.data import samplers


def _epoch_batches(sampler, epoch):
    spe = sampler.steps_per_epoch
    return [sampler.global_batch(step) for step in range(epoch * spe, (epoch + 1) * spe)]


def test_steps_per_epoch_drops_last():
    assert samplers.steps_per_epoch(10, 3) == 3
    assert samplers.steps_per_epoch(9, 3) == 3
    assert samplers.steps_per_epoch(2, 3) == 0
    with pytest.raises(ValueError):
        samplers.steps_per_epoch(10, 0)


def test_keyed_rng_is_deterministic_and_key_sensitive():
    a = samplers.keyed_rng(3, 1, 2).random(4)
    np.testing.assert_array_equal(a, samplers.keyed_rng(3, 1, 2).random(4))
    assert not np.array_equal(a, samplers.keyed_rng(3, 2, 1).random(4))
    assert not np.array_equal(a, samplers.keyed_rng(4, 1, 2).random(4))


@pytest.mark.parametrize("num_records,batch", [(23, 5), (20, 5), (7, 7)])
def test_shuffled_epochs_are_drop_last_permutations(num_records, batch):
    sampler = samplers.ShuffledEpochSampler(num_records, batch, seed=11)
    assert sampler.steps_per_epoch == num_records // batch
    for epoch in range(3):
        batches = _epoch_batches(sampler, epoch)
        assert all(b.shape == (batch,) for b in batches)
        flat = np.concatenate(batches)
        # Each record at most once per epoch; exactly N - N % B records are used.
        assert len(np.unique(flat)) == len(flat) == (num_records // batch) * batch
        assert flat.min() >= 0 and flat.max() < num_records
        # The batches are consecutive slices of the epoch's permutation.
        perm = sampler.epoch_permutation(epoch)
        np.testing.assert_array_equal(np.sort(perm), np.arange(num_records))
        np.testing.assert_array_equal(flat, perm[: len(flat)])


def test_shuffle_differs_by_epoch_and_seed_and_is_reproducible():
    a = samplers.ShuffledEpochSampler(50, 10, seed=0)
    b = samplers.ShuffledEpochSampler(50, 10, seed=1)
    again = samplers.ShuffledEpochSampler(50, 10, seed=0)
    assert not np.array_equal(a.epoch_permutation(0), a.epoch_permutation(1))
    assert not np.array_equal(a.epoch_permutation(0), b.epoch_permutation(0))
    for step in (0, 7, 12, 1000):
        np.testing.assert_array_equal(a.global_batch(step), again.global_batch(step))


def test_sample_maps_positions_to_epoch_and_record():
    sampler = samplers.ShuffledEpochSampler(23, 5, seed=2)  # 4 steps per epoch
    for position in (0, 4, 5, 19, 20, 21, 57):
        step, slot = divmod(position, 5)
        got = sampler.sample(position)
        assert got.position == position
        assert got.epoch == step // 4
        assert got.record == sampler.global_batch(step)[slot]


def test_sampler_pickles_without_cache():
    sampler = samplers.PkSampler(np.repeat(np.arange(6), 3), p=2, k=2, seed=5)
    first = sampler.global_batch(4)
    clone = pickle.loads(pickle.dumps(sampler))
    np.testing.assert_array_equal(clone.global_batch(4), first)


def _pk_labels():
    # identity -> number of images: some below K (with replacement), some above.
    counts = {10: 1, 11: 2, 12: 4, 13: 6, 14: 3, 15: 5, 16: 4, 17: 2, 18: 7}
    rng = np.random.default_rng(0)
    labels = np.concatenate([[i] * c for i, c in counts.items()])
    return rng.permutation(labels), counts


@pytest.mark.parametrize("seed", [0, 1])
def test_pk_batches_hold_p_identities_times_k(seed):
    labels, counts = _pk_labels()
    p, k = 2, 4
    sampler = samplers.PkSampler(labels, p=p, k=k, seed=seed)
    assert sampler.steps_per_epoch == len(counts) // p
    for epoch in range(3):
        seen = []
        for batch in _epoch_batches(sampler, epoch):
            assert batch.shape == (p * k,)
            groups = labels[batch].reshape(p, k)
            # Identity-contiguous groups of K images of one identity each, P distinct ids.
            assert np.all(groups == groups[:, :1])
            ids = groups[:, 0]
            assert len(set(ids.tolist())) == p
            seen.extend(ids.tolist())
            for group in batch.reshape(p, k):
                identity = labels[group[0]]
                if counts[identity] >= k:  # without replacement
                    assert len(np.unique(group)) == k
        # One pass over identities per epoch: no identity twice, the dropped rest is < P.
        assert len(seen) == len(set(seen))
        assert len(counts) - len(seen) < p


def test_pk_with_replacement_for_small_identities():
    labels = np.array([0, 1, 1, 2, 2, 2])
    sampler = samplers.PkSampler(labels, p=3, k=4, seed=0)
    batch = sampler.global_batch(0)
    groups = batch.reshape(3, 4)
    for group in groups:
        identity = labels[group[0]]
        assert set(group.tolist()) <= set(np.flatnonzero(labels == identity).tolist())
    single = groups[labels[groups[:, 0]] == 0][0]
    np.testing.assert_array_equal(single, [0, 0, 0, 0])


def test_pk_epochs_differ_and_seeds_differ():
    labels, _ = _pk_labels()
    a = samplers.PkSampler(labels, p=2, k=4, seed=0)
    b = samplers.PkSampler(labels, p=2, k=4, seed=1)
    assert not np.array_equal(a.identity_permutation(0), a.identity_permutation(1))
    e0 = np.concatenate(_epoch_batches(a, 0))
    assert not np.array_equal(e0, np.concatenate(_epoch_batches(a, 1)))
    assert not np.array_equal(e0, np.concatenate(_epoch_batches(b, 0)))


def test_pk_rejects_too_few_identities():
    with pytest.raises(ValueError, match="identities"):
        samplers.PkSampler(np.array([0, 0, 1]), p=3, k=2, seed=0)


@pytest.mark.parametrize("shard_count", [1, 2, 4])
def test_shard_positions_are_disjoint_slices_of_global_batches(shard_count):
    global_batch = 8
    local = global_batch // shard_count
    per_shard = []
    for shard in range(shard_count):
        per_shard.append(
            [
                samplers.local_to_global_position(
                    p, local_batch_size=local, shard_index=shard, shard_count=shard_count
                )
                for p in range(3 * local)
            ]
        )
    for step in range(3):
        together = np.concatenate(
            [np.asarray(s[step * local : (step + 1) * local]) for s in per_shard]
        )
        # Shard order concatenation is exactly global batch `step`, in order.
        np.testing.assert_array_equal(
            together, np.arange(step * global_batch, (step + 1) * global_batch)
        )


def test_draw_partner_uniform_over_list():
    offsets = np.array([0, 3, 3, 5], np.int64)
    indices = np.array([4, 7, 9, 1, 2], np.int64)
    rng = np.random.default_rng(0)
    draws = [samplers.draw_partner(0, offsets, indices, rng) for _ in range(600)]
    values, freq = np.unique(draws, return_counts=True)
    np.testing.assert_array_equal(values, [4, 7, 9])
    assert freq.min() > 150  # expected 200 each
    assert {samplers.draw_partner(2, offsets, indices, rng) for _ in range(50)} == {1, 2}
    with pytest.raises(ValueError, match="record 1"):
        samplers.draw_partner(1, offsets, indices, rng)
