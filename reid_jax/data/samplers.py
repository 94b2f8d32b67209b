"""Deterministic index maps for training streams: shuffled epochs, PK batches, partner captions.

Every sampler here is a pure function of `(seed, step)`: global batch `step` of the infinite
training stream is recomputed from scratch on demand, so an input pipeline restored at any step
produces exactly the batches (and augmentations) it would have produced without interruption.

An *epoch* is `steps_per_epoch` consecutive global batches and never straddles a reshuffle:
- `ShuffledEpochSampler` (SSAN, ssan §1.6): epoch `e` is a fresh permutation of the records cut
  into `N // B` batches; the last incomplete batch is dropped.
- `PkSampler` (AlignedReID, alignedreid §1.2): epoch `e` is a fresh permutation of the identities
  taken `P` at a time (last incomplete group dropped); each identity contributes `K` images,
  drawn without replacement if it has >= K images, else with replacement.

Per-process slicing (`local_to_global_position`) cuts each global batch into `shard_count`
contiguous slices, so the global batch is the concatenation of the per-process batches in
shard order (what `jax.make_array_from_process_local_data` assembles).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

# Distinct stream tags keep the random draws of different purposes independent even when
# they share (seed, epoch, index).
STREAM_SHUFFLE = 0
STREAM_PK_IMAGES = 1
STREAM_AUGMENT = 2
STREAM_PARTNER = 3


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """Returns a NumPy generator determined only by `seed` and `keys` (no global state).

    Args:
      seed: non-negative base seed.
      *keys: non-negative integers (stream tag, epoch, index, ...).

    Returns:
      A fresh `np.random.Generator` (PCG64) seeded by `SeedSequence([seed, *keys])`.
    """
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def steps_per_epoch(num_records: int, global_batch_size: int) -> int:
    """Number of full global batches in one epoch (the last incomplete batch is dropped).

    Args:
      num_records: records (or, for PK sampling, identities) per epoch.
      global_batch_size: batch size summed over processes (for PK: P).

    Returns:
      `num_records // global_batch_size`.
    """
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    return num_records // global_batch_size


class SampleIndex(NamedTuple):
    """Where one element of a process-local stream comes from.

    Attributes:
      position: index in the global stream (`step * global_batch_size + slot`).
      epoch: `step // steps_per_epoch`.
      record: index of the record in the data source.
    """

    position: int
    epoch: int
    record: int


class _StepCache:
    """Tiny thread-safe LRU cache of per-epoch / per-step index arrays (not pickled)."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._items: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, key: int, make) -> np.ndarray:
        with self._lock:
            value = self._items.get(key)
        if value is None:
            value = make(key)
            with self._lock:
                self._items[key] = value
                while len(self._items) > self._capacity:
                    self._items.pop(next(iter(self._items)))
        return value


class _Sampler:
    """Shared plumbing: subclasses define `steps_per_epoch`, `global_batch_size`, `_batch`."""

    steps_per_epoch: int
    global_batch_size: int

    def __init__(self, cache_capacity: int):
        self._cache_capacity = cache_capacity
        self._cache = _StepCache(cache_capacity)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_cache"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = _StepCache(self._cache_capacity)

    def epoch_of_step(self, step: int) -> int:
        """Returns the epoch of global batch `step`."""
        return step // self.steps_per_epoch

    def global_batch(self, step: int) -> np.ndarray:
        """Record indices of global batch `step`.

        Args:
          step: global batch index, >= 0.

        Returns:
          int64 [global_batch_size] record indices.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self._batch(step)

    def sample(self, position: int) -> SampleIndex:
        """Returns the `SampleIndex` of global stream position `position`."""
        step, slot = divmod(position, self.global_batch_size)
        record = int(self.global_batch(step)[slot])
        return SampleIndex(position=position, epoch=self.epoch_of_step(step), record=record)

    def _batch(self, step: int) -> np.ndarray:
        raise NotImplementedError


class ShuffledEpochSampler(_Sampler):
    """Uniform per-epoch reshuffling of records with drop-last batches (ssan §1.6).

    Args:
      num_records: N records in the data source.
      global_batch_size: B, batch size summed over processes.
      seed: non-negative shuffle seed; epoch `e` uses permutation `keyed_rng(seed, 0, e)`.
    """

    def __init__(self, num_records: int, global_batch_size: int, seed: int):
        super().__init__(cache_capacity=2)
        self.num_records = int(num_records)
        self.global_batch_size = int(global_batch_size)
        self.seed = int(seed)
        self.steps_per_epoch = steps_per_epoch(self.num_records, self.global_batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{num_records} records cannot fill one batch of {global_batch_size}")

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """Returns the int64 [N] record order of `epoch` (cached for the current epochs)."""
        return self._cache.get(
            epoch,
            lambda e: keyed_rng(self.seed, STREAM_SHUFFLE, e).permutation(self.num_records),
        )

    def _batch(self, step: int) -> np.ndarray:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        start = in_epoch * self.global_batch_size
        return self.epoch_permutation(epoch)[start : start + self.global_batch_size]


class PkSampler(_Sampler):
    """P identities x K images per global batch; an epoch is one pass over identities.

    Follows alignedreid §1.2. Identities are the distinct values of `labels`. Global batch
    `step` of epoch `e` holds the identities `perm_e[q*P:(q+1)*P]` (q = step within the epoch,
    identity-contiguous), and for each identity K of its records drawn with
    `keyed_rng(seed, 1, e, identity_position)`: without replacement when it has >= K records,
    else with replacement.

    Args:
      labels: int [N] identity of every record (any integers).
      p: identities per global batch.
      k: images per identity.
      seed: non-negative seed.
    """

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int):
        super().__init__(cache_capacity=8)
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
        if p <= 0 or k <= 0:
            raise ValueError(f"p and k must be positive, got p={p}, k={k}")
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.global_batch_size = self.p * self.k
        self.identities, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(self.identities))
        # CSR over identities: records of identity i are members[offsets[i]:offsets[i+1]].
        self.members = order.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.steps_per_epoch = steps_per_epoch(len(self.identities), self.p)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.identities)} identities cannot fill P={p} per batch")

    def identity_permutation(self, epoch: int) -> np.ndarray:
        """Returns the int64 [num_identities] identity order of `epoch`."""
        return keyed_rng(self.seed, STREAM_SHUFFLE, epoch).permutation(len(self.identities))

    def _draw(self, step: int) -> np.ndarray:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        chosen = self.identity_permutation(epoch)[in_epoch * self.p : (in_epoch + 1) * self.p]
        batch = np.empty(self.global_batch_size, np.int64)
        for slot, identity in enumerate(chosen):
            start, stop = self.offsets[identity], self.offsets[identity + 1]
            rng = keyed_rng(self.seed, STREAM_PK_IMAGES, epoch, in_epoch * self.p + slot)
            picks = rng.choice(stop - start, size=self.k, replace=bool(stop - start < self.k))
            batch[slot * self.k : (slot + 1) * self.k] = self.members[start + picks]
        return batch

    def _batch(self, step: int) -> np.ndarray:
        return self._cache.get(step, self._draw)


def local_to_global_position(
    local_position: int, *, local_batch_size: int, shard_index: int, shard_count: int
) -> int:
    """Maps a position of one process's stream to the global stream.

    Local batch `j` of process `s` is the contiguous slice
    `[s * b, (s + 1) * b)` of global batch `j`, with `b = local_batch_size`.

    Args:
      local_position: index in this process's stream.
      local_batch_size: b = global_batch_size // shard_count.
      shard_index: this process's index s in [0, shard_count).
      shard_count: number of processes.

    Returns:
      The global stream position.
    """
    step, offset = divmod(local_position, local_batch_size)
    return (step * shard_count + shard_index) * local_batch_size + offset


def draw_partner(
    record: int, partner_offsets: np.ndarray, partner_indices: np.ndarray, rng: np.random.Generator
) -> int:
    """Draws one partner record uniformly from `record`'s CSR partner list (ssan §1.4).

    Args:
      record: record index i.
      partner_offsets: int64 [N + 1] CSR offsets.
      partner_indices: int64 [M] CSR partner record indices.
      rng: generator keyed by (seed, epoch, record).

    Returns:
      The chosen partner record index.
    """
    start, stop = int(partner_offsets[record]), int(partner_offsets[record + 1])
    if stop <= start:
        raise ValueError(f"record {record} has no partner caption")
    return int(partner_indices[start + int(rng.integers(stop - start))])
