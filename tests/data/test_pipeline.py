"""Tests for reid_jax.data.pipeline on tiny JPEGs written by the tests."""

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from reid_jax.data import device_images, pipeline, samplers, ssan_examples, transforms
from reid_jax.data.records import CaptionedImage
from reid_jax.text.vocab import Vocabulary

IMAGE_SIZE = (16, 8)
BATCH = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 identities x 2-4 images x 1-2 captions; every caption's first token is unique."""
    root = tmp_path_factory.mktemp("pipeline_images")
    rng = np.random.default_rng(0)
    records, words = [], ["shared"]
    image_number = 0
    for pid in range(100, 108):
        for _ in range(int(rng.integers(2, 5))):
            path = str(root / f"{image_number}.jpg")
            Image.fromarray(rng.integers(0, 256, (22, 9, 3), dtype=np.uint8)).save(path)
            n_captions = int(rng.integers(1, 3))
            tokens = tuple((f"w{image_number}_{j}", "shared") for j in range(n_captions))
            words += [t[0] for t in tokens]
            captions = tuple(" ".join(t) for t in tokens)
            records.append(CaptionedImage(path, pid, captions, tokens, "train"))
            image_number += 1
    examples = ssan_examples.prepare_ssan_train(
        records, Vocabulary(tuple(words)), dataset="generic", max_length=4
    )
    return examples


def _record_lookup(examples):
    return {tuple(row): i for i, row in enumerate(examples.captions.tolist())}


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _reference_images(path, size, mean=0.5, std=0.5):
    """Direct PIL computation of the unflipped and flipped test-time image."""
    pil = Image.open(path).convert("RGB")
    out = []
    for flip in (False, True):
        p = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else pil
        p = p.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        out.append((np.asarray(p) / 255.0 - mean) / std)
    return out


def _loader(examples, **kwargs):
    args = dict(global_batch_size=BATCH, image_size=IMAGE_SIZE, seed=3)
    args.update(kwargs)
    return pipeline.make_ssan_train_loader(examples, **args)


def test_batches_follow_the_sampler_and_spec(dataset):
    ex = dataset
    lookup = _record_lookup(ex)
    spe = pipeline.steps_per_epoch(len(ex), BATCH)
    assert spe == len(ex) // BATCH
    sampler = samplers.ShuffledEpochSampler(len(ex), BATCH, seed=3)
    iterator = iter(_loader(ex))
    flips = set()
    for step, batch in enumerate(_take(iterator, 2 * spe)):
        assert batch["image"].shape == (BATCH, *IMAGE_SIZE, 3)
        assert batch["image"].dtype == np.uint8 and batch["flip"].dtype == bool
        # What the train step feeds the model (`device_images`, normalised on the device).
        images = np.asarray(
            device_images.model_images(
                batch["image"], batch["flip"], transforms.SSAN_MEAN, transforms.SSAN_STD
            )
        )
        for key in ("label", "caption", "length", "partner_caption", "partner_length"):
            assert batch[key].dtype == np.int32
        records = [lookup[tuple(row)] for row in batch["caption"].tolist()]
        np.testing.assert_array_equal(records, sampler.global_batch(step))
        np.testing.assert_array_equal(batch["label"], ex.labels[records])
        np.testing.assert_array_equal(batch["length"], ex.lengths[records])
        for row, record in enumerate(records):
            partner = lookup[tuple(batch["partner_caption"][row].tolist())]
            # The partner is a caption of ANOTHER image of the SAME identity.
            assert ex.person_ids[partner] == ex.person_ids[record]
            assert ex.image_index[partner] != ex.image_index[record]
            assert batch["partner_length"][row] == ex.lengths[partner]
            path = ex.image_paths[ex.image_index[record]]
            plain, flipped = _reference_images(path, IMAGE_SIZE)
            expected = flipped if batch["flip"][row] else plain
            np.testing.assert_allclose(images[row], expected, atol=1e-5)
            flips.add(bool(batch["flip"][row]))
    assert flips == {False, True}


def test_epochs_drop_last_and_reshuffle(dataset):
    ex = dataset
    lookup = _record_lookup(ex)
    spe = pipeline.steps_per_epoch(len(ex), BATCH)
    batches = _take(iter(_loader(ex)), 2 * spe)
    epochs = []
    for epoch in range(2):
        records = [
            lookup[tuple(row)]
            for b in batches[epoch * spe : (epoch + 1) * spe]
            for row in b["caption"].tolist()
        ]
        assert len(set(records)) == len(records) == spe * BATCH  # each at most once
        epochs.append(records)
    assert epochs[0] != epochs[1]
    other_seed = next(iter(_loader(ex, seed=4)))
    assert not np.array_equal(other_seed["caption"], batches[0]["caption"])


def test_partner_is_redrawn_across_epochs(dataset):
    ex = dataset
    counts = np.diff(ex.partner_offsets)
    record = int(np.argmax(counts))
    assert counts[record] >= 3
    element_map = pipeline.SsanTrainMap(ex, IMAGE_SIZE, seed=3)
    partners = {
        tuple(element_map.map(samplers.SampleIndex(0, epoch, record))["partner_caption"])
        for epoch in range(12)
    }
    assert len(partners) > 1
    # Same (seed, epoch, record) -> same draw, whatever the stream position.
    a = element_map.map(samplers.SampleIndex(0, 5, record))
    b = element_map.map(samplers.SampleIndex(999, 5, record))
    _assert_batches_equal(a, b)


def test_resume_mid_epoch_is_exact(dataset):
    assert 3 < pipeline.steps_per_epoch(len(dataset), BATCH) < 7
    loader = _loader(dataset)
    iterator = iter(loader)
    _take(iterator, 3)
    state = iterator.get_state()
    expected = _take(iterator, 4)  # crosses the epoch boundary
    resumed = iter(loader)
    resumed.set_state(state)
    for a, b in zip(expected, _take(resumed, 4), strict=True):
        _assert_batches_equal(a, b)


def test_resume_with_worker_processes(dataset):
    loader = _loader(dataset, num_workers=2)
    iterator = iter(loader)
    try:
        first = _take(iterator, 3)
        state = iterator.get_state()
        expected = next(iterator)
    finally:
        iterator.close()
    resumed = iter(loader)
    try:
        resumed.set_state(state)
        _assert_batches_equal(next(resumed), expected)
    finally:
        resumed.close()
    # The stream does not depend on the number of worker processes.
    serial = _take(iter(_loader(dataset)), 4)
    for a, b in zip(first + [expected], serial, strict=True):
        _assert_batches_equal(a, b)


def test_orbax_checkpoint_round_trip(dataset, tmp_path):
    loader = _loader(dataset)
    iterator = iter(loader)
    _take(iterator, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(
            2, args=ocp.args.Composite(data=pipeline.iterator_checkpoint_args_save(iterator))
        )
        manager.wait_until_finished()
    expected = next(iterator)
    fresh = iter(loader)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        restored = manager.restore(
            2, args=ocp.args.Composite(data=pipeline.iterator_checkpoint_args_restore(fresh))
        )
    assert restored["data"] is fresh
    _assert_batches_equal(next(fresh), expected)


@pytest.mark.parametrize("shard_count", [2, 4])
def test_process_shards_concatenate_to_global_batch(dataset, shard_count):
    full = _take(iter(_loader(dataset)), 3)
    shards = [
        _take(iter(_loader(dataset, shard_index=s, shard_count=shard_count)), 3)
        for s in range(shard_count)
    ]
    for step in range(3):
        parts = [shards[s][step] for s in range(shard_count)]
        assert parts[0]["image"].shape[0] == BATCH // shard_count
        together = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        _assert_batches_equal(together, full[step])


def test_pk_loader(dataset):
    ex = dataset
    labels = ex.labels[np.searchsorted(ex.image_index, np.arange(len(ex.image_paths)))]
    p, k = 3, 2
    kwargs = dict(p=p, k=k, image_size=IMAGE_SIZE, seed=1)
    full = _take(iter(pipeline.make_pk_train_loader(labels, ex.image_paths, **kwargs)), 4)
    halves = [
        _take(
            iter(
                pipeline.make_pk_train_loader(
                    labels, ex.image_paths, shard_index=s, shard_count=2, **kwargs
                )
            ),
            4,
        )
        for s in range(2)
    ]
    n_ids = len(set(labels.tolist()))
    assert pipeline.steps_per_epoch(n_ids, p) == 2
    for step, batch in enumerate(full):
        assert batch["image"].shape == (p * k, *IMAGE_SIZE, 3)
        assert batch["label"].dtype == np.int32
        groups = batch["label"].reshape(p, k)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0].tolist())) == p
        together = {key: np.concatenate([h[step][key] for h in halves]) for key in batch}
        _assert_batches_equal(together, batch)
    # One epoch (2 steps) visits distinct identities.
    epoch_ids = np.concatenate([b["label"][::k] for b in full[:2]])
    assert len(set(epoch_ids.tolist())) == len(epoch_ids)


def test_eval_batches_pad_with_mask(dataset):
    paths = dataset.image_paths[:7]
    batches = list(pipeline.make_eval_batches(paths, image_size=IMAGE_SIZE, batch_size=3))
    assert len(batches) == 3
    masks = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(masks, [True] * 7 + [False] * 2)
    images = np.concatenate([b["image"] for b in batches])
    assert images.shape == (9, *IMAGE_SIZE, 3) and images.dtype == np.float32
    for i, path in enumerate(paths):
        np.testing.assert_allclose(images[i], _reference_images(path, IMAGE_SIZE)[0], atol=1e-5)
    assert not images[7:].any()
    exact = list(pipeline.make_eval_batches(paths[:6], image_size=IMAGE_SIZE, batch_size=3))
    assert len(exact) == 2 and all(b["mask"].all() for b in exact)


def test_eval_text_batches_pad_with_mask():
    captions = np.arange(5 * 3, dtype=np.int32).reshape(5, 3) + 1
    lengths = np.array([3, 2, 1, 3, 2], np.int32)
    batches = list(pipeline.make_eval_text_batches(captions, lengths, batch_size=2))
    assert len(batches) == 3
    np.testing.assert_array_equal(np.concatenate([b["caption"] for b in batches])[:5], captions)
    last = batches[-1]
    np.testing.assert_array_equal(last["mask"], [True, False])
    np.testing.assert_array_equal(last["caption"][1], [0, 0, 0])
    np.testing.assert_array_equal(last["length"], [2, 1])
    assert list(pipeline.make_eval_text_batches(captions[:0], lengths[:0], batch_size=2)) == []
