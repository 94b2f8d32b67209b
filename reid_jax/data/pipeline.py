"""grain input pipelines: SSAN and PK training streams, padded evaluation batches, checkpoints.

Training graph (STYLE "Data"):

    SampledStreamSource          per-epoch shuffle (seed) + repeat + per-process slice, as one
      |                          deterministic index map (`reid_jax.data.samplers`)
    .map(<method>TrainMap)       decode + augment; randomness keyed by (seed, epoch, index)
    .batch(b, drop_remainder)    b = global_batch_size // shard_count
    .to_iter_dataset(threads)    thread prefetch of whole batches
    .mp_prefetch(workers)        optional worker processes, each producing whole batches

Why an index map rather than grain's `shuffle().repeat().batch()`: there a batch may straddle
two epochs, whereas here epoch e is exactly global steps `[e*S_e, (e+1)*S_e)` with
`S_e = steps_per_epoch` (the last incomplete batch of each epoch is dropped, ssan §1.6), which
is what the learning-rate milestones and SSAN's epoch-5 margin switch count; and PK batches
are sampled per identity (alignedreid §1.2). Batching happens on the `MapDataset`, so every
worker produces whole batches and the stream is identical for any `num_workers`.

Iterators are grain `DatasetIterator`s: `get_state()`/`set_state()` round-trip exactly
(state = number of batches consumed). Inside an orbax `CheckpointManager` use
`ocp.args.Composite(state=..., data=iterator_checkpoint_args_save(iterator))` to save and
`data=iterator_checkpoint_args_restore(iterator)` to restore; each process writes its own
`process_<i>-of-<n>.json`.

Worker processes (`num_workers > 0`) need absl flags parsed and a `__main__` guard in scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np

from reid_jax.data import transforms
from reid_jax.data.bad_images import SKIPPED_FIELD, TrainingImages
from reid_jax.data.samplers import (
    STREAM_AUGMENT,
    STREAM_PARTNER,
    PkSampler,
    SampleIndex,
    ShuffledEpochSampler,
    draw_partner,
    keyed_rng,
)
from reid_jax.data.samplers import steps_per_epoch as _steps_per_epoch
from reid_jax.data.sources import PaddedIndex, PaddedIndexSource, SampledStreamSource
from reid_jax.data.ssan_examples import SsanTrainExamples

# transform(image uint8 [h, w, 3], *, image_size, rng) -> float32 [H, W, 3]
TrainTransform = Callable[..., tuple[np.ndarray, np.bool_]]


def steps_per_epoch(num_records: int, global_batch_size: int) -> int:
    """Full global batches per epoch, last incomplete batch dropped (ssan §1.6).

    Args:
      num_records: records per epoch (for PK loaders pass identities and P).
      global_batch_size: batch size over all processes.

    Returns:
      `num_records // global_batch_size`.
    """
    return _steps_per_epoch(num_records, global_batch_size)


class SsanTrainMap(grain.transforms.Map):
    """`SampleIndex` -> one SSAN training example (ssan §1.4-1.5).

    Flip and partner draws use independent generators keyed by (seed, stream, epoch, record).
    An unreadable image stops the run or replaces the whole example by a substitute record's
    (`data.bad_images`).

    Args:
      examples: prepared training examples.
      image_size: (H, W).
      seed: non-negative seed.
      bad_images: 'stop' or 'skip' (`reid_jax.data.bad_images`).
    """

    def __init__(
        self,
        examples: SsanTrainExamples,
        image_size: tuple[int, int],
        seed: int,
        bad_images: str = "stop",
    ):
        self.examples = examples
        self.image_size = tuple(image_size)
        self.seed = int(seed)
        paths = [examples.image_paths[i] for i in examples.image_index]
        self.images = TrainingImages(
            paths, examples.labels, policy=bad_images, same_identity_only=False
        )

    def map(self, element: SampleIndex) -> dict[str, np.ndarray]:
        """Returns image uint8 [H, W, 3] (resized), flip bool [] (the step mirrors and
        normalises it: `data.device_images`), label, caption, length, partner_caption/length;
        under data.bad_images='skip' also skipped int32 [] (1: a substitute record's)."""
        ex = self.examples
        record, image, skipped = self.images.read(element.record)
        image, flip = transforms.ssan_train_resize(
            image,
            image_size=self.image_size,
            rng=keyed_rng(self.seed, STREAM_AUGMENT, element.epoch, record),
        )
        partner = draw_partner(
            record,
            ex.partner_offsets,
            ex.partner_indices,
            keyed_rng(self.seed, STREAM_PARTNER, element.epoch, record),
        )
        out = {
            "image": image,
            "flip": flip,
            "label": ex.labels[record],
            "caption": ex.captions[record],
            "length": ex.lengths[record],
            "partner_caption": ex.captions[partner],
            "partner_length": ex.lengths[partner],
        }
        if self.images.counts_skips:
            out[SKIPPED_FIELD] = np.int32(skipped)
        return out


class PkTrainMap(grain.transforms.Map):
    """`SampleIndex` -> {'image', 'label'} for PK training (alignedreid §1.1).

    The augmentation generator is keyed by (seed, epoch, global position) rather than the
    record, because with-replacement sampling can repeat a record inside one batch.

    Args:
      labels: int [N] labels emitted per record.
      image_paths: [N] image files.
      image_size: (H, W).
      seed: non-negative seed.
      transform: `transform(image, *, image_size, rng) -> (uint8 [H, W, 3], bool flip)`,
        the host half of a training transform (e.g. `transforms.alignedreid_train_resize`);
        must be picklable (a module-level function or `functools.partial`) for worker
        processes.
      bad_images: 'stop' or 'skip' (`reid_jax.data.bad_images`); a substitute image is
        always of the same identity, so the batch keeps its P x K structure.
    """

    def __init__(
        self,
        labels: np.ndarray,
        image_paths: Sequence[str],
        image_size: tuple[int, int],
        seed: int,
        transform: TrainTransform,
        bad_images: str = "stop",
    ):
        self.labels = np.asarray(labels).astype(np.int32)
        self.image_paths = list(image_paths)
        self.image_size = tuple(image_size)
        self.seed = int(seed)
        self.transform = transform
        self.images = TrainingImages(
            self.image_paths, self.labels, policy=bad_images, same_identity_only=True
        )

    def map(self, element: SampleIndex) -> dict[str, np.ndarray]:
        """Returns image uint8 [H, W, 3], flip bool [] and label int32 []; under
        data.bad_images='skip' also skipped int32 [] (1: another image of the identity)."""
        rng = keyed_rng(self.seed, STREAM_AUGMENT, element.epoch, element.position)
        record, image, skipped = self.images.read(element.record)
        image, flip = self.transform(image, image_size=self.image_size, rng=rng)
        out = {"image": image, "flip": flip, "label": self.labels[record]}
        if self.images.counts_skips:
            out[SKIPPED_FIELD] = np.int32(skipped)
        return out


class EvalImageMap(grain.transforms.Map):
    """`PaddedIndex` -> {'image', 'mask'}; padding slots are zeros and are not decoded.

    Args:
      image_paths: [G] image files.
      image_size: (H, W).
      transform: `transform(image, *, image_size) -> float32 [H, W, 3]`.
    """

    def __init__(
        self,
        image_paths: Sequence[str],
        image_size: tuple[int, int],
        transform: Callable[..., np.ndarray],
    ):
        self.image_paths = list(image_paths)
        self.image_size = tuple(image_size)
        self.transform = transform

    def map(self, element: PaddedIndex) -> dict[str, np.ndarray]:
        """Returns image float32 [H, W, 3] and mask bool []."""
        if not element.valid:
            image = np.zeros((*self.image_size, 3), np.float32)
        else:
            image = transforms.load_rgb(self.image_paths[element.index])
            image = self.transform(image, image_size=self.image_size)
        return {"image": image, "mask": np.bool_(element.valid)}


def _stream_loader(
    source: SampledStreamSource,
    element_map: grain.transforms.Map,
    *,
    num_workers: int,
    num_threads: int,
    worker_buffer_size: int,
) -> grain.IterDataset:
    """Shared tail of the training graphs: map -> batch -> thread/process prefetch."""
    ds = grain.MapDataset.source(source).map(element_map)
    ds = ds.batch(source.local_batch_size, drop_remainder=True)
    # Elements are whole batches (MBs each): keep the thread buffer small.
    ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(num_threads, 1))
    )
    if num_workers > 0:
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=num_workers, per_worker_buffer_size=worker_buffer_size
            )
        )
    return ds


def make_shuffled_loader(
    num_records: int,
    element_map: grain.transforms.Map,
    *,
    global_batch_size: int,
    seed: int,
    num_workers: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_buffer_size: int = 2,
    num_threads: int = 2,
) -> grain.IterDataset:
    """Infinite per-epoch-shuffled stream of `element_map(SampleIndex)`, this process's slice.

    Args:
      num_records: records in the data source.
      element_map: grain Map from `SampleIndex` to one example dict (picklable for workers).
      global_batch_size: batch over all processes; divisible by shard_count.
      seed: shuffling seed.
      num_workers, shard_index, shard_count, worker_buffer_size, num_threads: as
        `make_ssan_train_loader`.

    Returns:
      a grain `IterDataset` of batches of global_batch_size // shard_count examples.
    """
    sampler = ShuffledEpochSampler(num_records, global_batch_size, seed)
    source = SampledStreamSource(sampler, shard_index=shard_index, shard_count=shard_count)
    return _stream_loader(
        source,
        element_map,
        num_workers=num_workers,
        num_threads=num_threads,
        worker_buffer_size=worker_buffer_size,
    )


def make_ssan_train_loader(
    examples: SsanTrainExamples,
    *,
    global_batch_size: int,
    image_size: tuple[int, int],
    seed: int,
    num_workers: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_buffer_size: int = 2,
    num_threads: int = 2,
    bad_images: str = "stop",
) -> grain.IterDataset:
    """Infinite SSAN training stream (ssan §1.4-1.6), one process's slice of each batch.

    Args:
      examples: output of `prepare_ssan_train`.
      global_batch_size: B over all processes (64 in the paper); divisible by shard_count.
      image_size: (H, W), (384, 128) in the paper.
      seed: non-negative seed of shuffling, flips and partner draws.
      num_workers: grain worker processes (0 = decode in this process's threads).
      shard_index: this process's index (`jax.process_index()`).
      shard_count: number of processes (`jax.process_count()`).
      worker_buffer_size: batches buffered per worker process.
      num_threads: threads decoding batches in each process.
      bad_images: 'stop' or 'skip' an unreadable image (`reid_jax.data.bad_images`).

    Returns:
      a grain `IterDataset`; `iter()` gives a checkpointable iterator of dicts with
      b = global_batch_size // shard_count: image uint8 [b, H, W, 3], flip bool [b] (the step
      mirrors and normalises: `data.device_images`), label int32 [b],
      caption int32 [b, T], length int32 [b], partner_caption int32 [b, T],
      partner_length int32 [b], and under bad_images='skip' skipped int32 [b] (1: the
      example stands in for one whose image is unreadable). Global step s is in epoch
      `s // steps_per_epoch(N, B)`.
    """
    return make_shuffled_loader(
        len(examples),
        SsanTrainMap(examples, image_size, seed, bad_images),
        global_batch_size=global_batch_size,
        seed=seed,
        num_workers=num_workers,
        shard_index=shard_index,
        shard_count=shard_count,
        worker_buffer_size=worker_buffer_size,
        num_threads=num_threads,
    )


def make_pk_train_loader(
    labels: np.ndarray,
    image_paths: Sequence[str],
    *,
    p: int,
    k: int,
    image_size: tuple[int, int],
    seed: int,
    transform: TrainTransform = transforms.alignedreid_train_resize,
    num_workers: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_buffer_size: int = 2,
    num_threads: int = 2,
    bad_images: str = "stop",
) -> grain.IterDataset:
    """Infinite P x K training stream (alignedreid §1.2), one process's slice of each batch.

    Each global batch holds P distinct identities x K images, identity-contiguous; an epoch
    is `steps_per_epoch(num_identities, P)` global batches (last incomplete group dropped).

    Args:
      labels: int [N] label of each image (pass contiguous 0-based labels; they are emitted
        as int32 unchanged and also define the identities).
      image_paths: [N] image files.
      p: identities per global batch (32 in the re-production).
      k: images per identity (4).
      image_size: (H, W), (256, 128) in the re-production.
      seed: non-negative seed.
      transform: per-image training transform, see `PkTrainMap`.
      num_workers, shard_index, shard_count, worker_buffer_size, num_threads: as in
        `make_ssan_train_loader`; shard_count must divide P * K.
      bad_images: 'stop' or 'skip' an unreadable image (`reid_jax.data.bad_images`).

    Returns:
      a grain `IterDataset` of {'image': uint8 [b, H, W, 3], 'flip': bool [b] (the step
      normalises and mirrors: `data.device_images`), 'label': int32 [b]} (+ 'skipped' int32
      [b] under bad_images='skip'), b = P * K // shard_count.
    """
    labels = np.asarray(labels)
    if len(labels) != len(image_paths):
        raise ValueError(f"{len(labels)} labels for {len(image_paths)} image paths")
    sampler = PkSampler(labels, p, k, seed)
    source = SampledStreamSource(sampler, shard_index=shard_index, shard_count=shard_count)
    return _stream_loader(
        source,
        PkTrainMap(labels, image_paths, image_size, seed, transform, bad_images),
        num_workers=num_workers,
        num_threads=num_threads,
        worker_buffer_size=worker_buffer_size,
    )


def make_eval_batches(
    image_paths: Sequence[str],
    *,
    image_size: tuple[int, int],
    batch_size: int,
    transform: Callable[..., np.ndarray] = transforms.ssan_test_transform,
    num_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation image batches in file order, the last one padded (STYLE "Data").

    Args:
      image_paths: [G] image files.
      image_size: (H, W).
      batch_size: images per batch.
      transform: `transform(image, *, image_size) -> float32 [H, W, 3]` (default: SSAN
        test transform; use `transforms.alignedreid_test_transform` for AlignedReID).
      num_threads: decoding threads.

    Returns:
      an iterator of ceil(G / batch_size) dicts: image float32 [batch_size, H, W, 3] and
      mask bool [batch_size] (False on padding rows, whose images are zeros).
    """
    ds = grain.MapDataset.source(PaddedIndexSource(len(image_paths), batch_size))
    ds = ds.map(EvalImageMap(image_paths, image_size, transform)).batch(batch_size)
    ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(num_threads, 1))
    )
    return iter(ds)


def make_eval_text_batches(
    captions: np.ndarray, lengths: np.ndarray, *, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation caption batches in order, the last one padded.

    Args:
      captions: int32 [Q, T] word ids.
      lengths: int32 [Q].
      batch_size: captions per batch.

    Returns:
      an iterator of ceil(Q / batch_size) dicts: caption int32 [batch_size, T],
      length int32 [batch_size], mask bool [batch_size]. Padding rows are all-zero captions
      with length 1 (never 0, which would break masked pooling) and mask False.
    """
    captions = np.asarray(captions, np.int32)
    lengths = np.asarray(lengths, np.int32)
    if captions.ndim != 2 or lengths.shape != captions.shape[:1]:
        raise ValueError(f"captions {captions.shape} and lengths {lengths.shape} do not match")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    num = len(captions)
    for start in range(0, num, batch_size):
        stop = min(start + batch_size, num)
        pad = batch_size - (stop - start)
        yield {
            "caption": np.pad(captions[start:stop], ((0, pad), (0, 0))),
            "length": np.pad(lengths[start:stop], (0, pad), constant_values=1),
            "mask": np.arange(batch_size) < stop - start,
        }


def iterator_checkpoint_args_save(
    iterator: grain.DatasetIterator,
) -> grain.checkpoint.CheckpointSave:
    """orbax save args for a grain iterator (use inside `ocp.args.Composite(data=...)`).

    Args:
      iterator: a training iterator from one of the loaders.

    Returns:
      `grain.checkpoint.CheckpointSave`, handled by grain's orbax `CheckpointHandler`, which
      writes the iterator state as JSON, one file per process.
    """
    return grain.checkpoint.CheckpointSave(iterator)


def iterator_checkpoint_args_restore(
    iterator: grain.DatasetIterator,
) -> grain.checkpoint.CheckpointRestore:
    """orbax restore args for a grain iterator: restores the state into `iterator` in place.

    Args:
      iterator: a fresh iterator of the same loader (same examples, batch size, seed, shard).

    Returns:
      `grain.checkpoint.CheckpointRestore`; `manager.restore(step, args=Composite(data=...))`
      returns the same iterator object with its state set.
    """
    return grain.checkpoint.CheckpointRestore(iterator)
