"""Random-access sources (grain `RandomAccessDataSource` protocol: `__len__`, `__getitem__`).

- `SampledStreamSource`: one process's infinite training stream. Element `p` is the
  `SampleIndex` (global position, epoch, record) the sampler assigns to local position `p`,
  i.e. per-epoch shuffling, repetition and per-process slicing folded into one index map.
- `PaddedIndexSource`: `0 ... padded_length - 1` -> (index, valid), for evaluation batches
  padded to a whole number of batches.

Both are tiny, picklable and stateless (samplers cache, but drop their cache when pickled),
so they can be shipped to grain worker processes.
"""

from __future__ import annotations

import sys
from typing import NamedTuple, Protocol

from reid_jax.data.samplers import SampleIndex, local_to_global_position


class StreamSampler(Protocol):
    """What `SampledStreamSource` needs from a sampler (`reid_jax.data.samplers`)."""

    global_batch_size: int
    steps_per_epoch: int

    def sample(self, position: int) -> SampleIndex:
        """Returns the `SampleIndex` of a global stream position."""
        ...


class SampledStreamSource:
    """Process-local view of an infinite sampled stream (positions -> `SampleIndex`).

    Local batch j of shard s holds global positions `[(j*S + s)*b, (j*S + s + 1)*b)`, with
    b = global_batch_size // S, so the S shards' batch j together form global batch j.

    Args:
      sampler: a `ShuffledEpochSampler` or `PkSampler`.
      shard_index: s, this process's index.
      shard_count: S, number of processes; must divide the global batch size.
    """

    def __init__(self, sampler: StreamSampler, *, shard_index: int = 0, shard_count: int = 1):
        if shard_count <= 0 or not 0 <= shard_index < shard_count:
            raise ValueError(f"invalid shard {shard_index} of {shard_count}")
        if sampler.global_batch_size % shard_count:
            raise ValueError(
                f"global batch size {sampler.global_batch_size} is not divisible by "
                f"shard_count={shard_count}"
            )
        self.sampler = sampler
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.local_batch_size = sampler.global_batch_size // shard_count

    def __len__(self) -> int:
        return sys.maxsize  # infinite, like grain's `repeat(None)`

    def __getitem__(self, position: int) -> SampleIndex:
        """Returns the `SampleIndex` of local position `position` (>= 0)."""
        if position < 0:
            raise IndexError(f"negative stream position {position}")
        return self.sampler.sample(
            local_to_global_position(
                int(position),
                local_batch_size=self.local_batch_size,
                shard_index=self.shard_index,
                shard_count=self.shard_count,
            )
        )

    def __repr__(self) -> str:
        return (
            f"SampledStreamSource({type(self.sampler).__name__}, "
            f"shard={self.shard_index}/{self.shard_count})"
        )


class PaddedIndex(NamedTuple):
    """One slot of a padded evaluation batch.

    Attributes:
      index: item index, clamped to the last real item for padding slots.
      valid: False for padding slots.
    """

    index: int
    valid: bool


class PaddedIndexSource:
    """`num_items` indices padded to a multiple of `batch_size` (evaluation batches).

    Args:
      num_items: real items, >= 0.
      batch_size: batch size the length is rounded up to.
    """

    def __init__(self, num_items: int, batch_size: int):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return -(-self.num_items // self.batch_size) * self.batch_size

    def __getitem__(self, index: int) -> PaddedIndex:
        """Returns (index, valid); padding slots point at a real item but are invalid."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        valid = index < self.num_items
        return PaddedIndex(index=int(index) if valid else self.num_items - 1, valid=valid)

    def __repr__(self) -> str:
        return f"PaddedIndexSource({self.num_items}, batch_size={self.batch_size})"
