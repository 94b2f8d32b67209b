"""data.bad_images: an unreadable training image stops the stream naming it, or is replaced
by a deterministic substitute of the same identity and counted (issue 14, item 4)."""

import numpy as np
import pytest
from PIL import Image

from reid_jax.data import aptm_examples, bad_images, pipeline, samplers, ssan_examples
from reid_jax.data.bad_images import BadImageError, substitute_order
from reid_jax.data.records import CaptionedImage, CaptionPair
from reid_jax.data.samplers import SampleIndex
from reid_jax.text.vocab import Vocabulary
from reid_jax.text.wordpiece import WordPieceTokenizer

IMAGE_SIZE = (16, 8)


def _write_images(root, count, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = root / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (22, 9, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _truncate(path):
    """Keeps the first half of the file: the header parses, the pixels do not."""
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_substitutes_are_the_same_identity_first_cyclically():
    labels = np.array([0, 1, 0, 2, 0, 1])
    assert list(substitute_order(2, labels, same_identity_only=False)) == [4, 0, 3, 5, 1]
    assert list(substitute_order(2, labels, same_identity_only=True)) == [4, 0]
    assert list(substitute_order(3, labels, same_identity_only=True)) == []
    with pytest.raises(ValueError, match="data.bad_images must be one of"):
        bad_images.check_policy("ignore")


def _pk_map(paths, labels, policy):
    return pipeline.PkTrainMap(labels, paths, IMAGE_SIZE, 5, pipeline.transforms.ssan_train_resize,
                               policy)  # fmt: skip


def test_pk_map_stops_naming_the_file_or_substitutes_the_same_identity(tmp_path):
    labels = np.array([0, 0, 0, 1, 1])
    paths = _write_images(tmp_path, 5)
    _truncate(paths[1])
    element = SampleIndex(position=7, epoch=2, record=1)
    with pytest.raises(BadImageError, match=r"1\.jpg, field 'image': cannot read this training"):
        _pk_map(paths, labels, "stop").map(element)
    with pytest.raises(BadImageError, match="--config.data.bad_images=skip"):
        _pk_map(paths, labels, "stop").map(element)
    good = _pk_map(paths, labels, "stop").map(element._replace(record=0))
    assert "skipped" not in good  # 'stop' streams carry no count

    skip = _pk_map(paths, labels, "skip")
    out = skip.map(element)
    # Record 2 (the next of identity 0) stands in, augmented as record 1 would have been
    # (keyed by epoch and position), with the same label.
    expected = skip.map(element._replace(record=2))
    assert out["skipped"] == 1 and expected["skipped"] == 0
    assert out["label"] == 0
    np.testing.assert_array_equal(out["image"], expected["image"])
    assert out["flip"] == expected["flip"]
    again = _pk_map(paths, labels, "skip").map(element)  # a fresh copy (another worker)
    for key in out:
        np.testing.assert_array_equal(out[key], again[key], err_msg=key)

    # No other image of identity 1 decodes: a P x K batch cannot be kept, so it stops.
    _truncate(paths[3])
    _truncate(paths[4])
    with pytest.raises(BadImageError, match=r"4\.jpg.*none of the 1 other images of its"):
        skip.map(element._replace(record=4))
    (tmp_path / "0.jpg").unlink()  # a missing file is unreadable too
    with pytest.raises(BadImageError, match=r"0\.jpg.*image file not found"):
        _pk_map(paths, labels, "stop").map(element._replace(record=0))


def test_pk_loader_skips_keep_batches_whole_counted_and_resumable(tmp_path):
    labels = np.repeat(np.arange(4), 3)  # 4 identities x 3 images
    paths = _write_images(tmp_path, 12)
    bad = 4
    _truncate(paths[bad])
    kwargs = dict(p=2, k=2, image_size=IMAGE_SIZE, seed=1, bad_images="skip")
    iterator = iter(pipeline.make_pk_train_loader(labels, paths, **kwargs))
    batches = [next(iterator) for _ in range(8)]
    sampler = samplers.PkSampler(labels, 2, 2, 1)
    drawn = [sampler.global_batch(step) for step in range(8)]
    counts = [int(np.sum(records == bad)) for records in drawn]
    assert sum(counts) > 0  # the bad image is drawn in these steps
    for batch, records, count in zip(batches, drawn, counts, strict=True):
        assert int(batch["skipped"].sum()) == count
        np.testing.assert_array_equal(batch["skipped"], (records == bad).astype(np.int32))
        np.testing.assert_array_equal(batch["label"], labels[records])  # P x K kept
    # A resumed iterator sees exactly the same batches, substitutes included.
    first = iter(pipeline.make_pk_train_loader(labels, paths, **kwargs))
    for _ in range(3):
        next(first)
    resumed = iter(pipeline.make_pk_train_loader(labels, paths, **kwargs))
    resumed.set_state(first.get_state())
    for batch in batches[3:]:
        again = next(resumed)
        for key in batch:
            np.testing.assert_array_equal(batch[key], again[key], err_msg=key)


def test_ssan_map_replaces_the_whole_example(tmp_path):
    paths = _write_images(tmp_path, 4)
    captions = {0: ("a red coat", "red bag"), 1: ("a man",), 2: ("a coat",), 3: ("a bag",)}
    records = [
        CaptionedImage(
            paths[i], 7 + i % 2, captions[i], tuple(tuple(c.split()) for c in captions[i]), "train"
        )  # noqa: E501
        for i in range(4)
    ]
    vocab = Vocabulary(("a", "red", "coat", "bag", "man"))
    examples = ssan_examples.prepare_ssan_train(records, vocab, dataset="generic", max_length=4)
    record_paths = [examples.image_paths[i] for i in examples.image_index]
    _truncate(paths[0])
    skip = pipeline.SsanTrainMap(examples, IMAGE_SIZE, 3, "skip")
    bad_records = [r for r, path in enumerate(record_paths) if path == paths[0]]
    assert len(bad_records) == 2  # both captions of the truncated image
    for record in bad_records:
        n = len(examples)
        substitute = next(
            c % n
            for c in range(record + 1, record + n)
            if examples.labels[c % n] == examples.labels[record] and record_paths[c % n] != paths[0]
        )
        assert record_paths[substitute] == paths[2]  # the other image of identity 7
        element = SampleIndex(position=1, epoch=0, record=record)
        out = skip.map(element)
        expected = skip.map(element._replace(record=substitute))
        assert out["skipped"] == 1 and out["label"] == examples.labels[record]
        for key in ("image", "flip", "label", "caption", "length", "partner_caption"):
            np.testing.assert_array_equal(out[key], expected[key], err_msg=key)
    with pytest.raises(BadImageError, match=r"0\.jpg"):
        pipeline.SsanTrainMap(examples, IMAGE_SIZE, 3, "stop").map(
            SampleIndex(position=1, epoch=0, record=bad_records[0])
        )


def test_aptm_map_skips_to_another_identity_when_its_own_has_none(tmp_path):
    paths = _write_images(tmp_path, 3)
    captions = ("a woman in red", "a man with a bag", "a man in blue")
    vocab = aptm_examples.build_word_vocab(captions)
    tokenizer = WordPieceTokenizer({t: i for i, t in enumerate(vocab)})
    pairs = [
        CaptionPair(path, caption, identity, None)
        for path, caption, identity in zip(paths, captions, ("w", "m", "m2"), strict=True)
    ]
    examples = aptm_examples.prepare_train(pairs, tokenizer, max_tokens=12)
    _truncate(paths[0])
    kwargs = dict(
        image_size=IMAGE_SIZE, normalisation=aptm_examples.NORMALISATION["cuhk"], erasing_p=0.5,
        max_tokens=12, max_words=20, eda=False, clean_eda=False, eda_synonyms="none",
        prompt_ids=None, seed=0,
    )  # fmt: skip
    skip = aptm_examples.AptmTrainMap(examples, tokenizer, bad_images="skip", **kwargs)
    element = SampleIndex(position=5, epoch=1, record=0)
    out = skip.map(element)
    expected = skip.map(element._replace(record=1))  # identity 'w' has no other image
    assert out["skipped"] == 1 and out["label"] == examples.labels[1]
    for key in ("image", "label", "input_ids", "mlm_ids", "mlm_positions"):
        np.testing.assert_array_equal(out[key], expected[key], err_msg=key)
    stop = aptm_examples.AptmTrainMap(examples, tokenizer, bad_images="stop", **kwargs)
    with pytest.raises(BadImageError, match=r"0\.jpg"):
        stop.map(element)


def test_worker_processes_stop_with_the_same_error_and_skip_the_same_way(tmp_path):
    """With grain worker processes the error crosses a process boundary pickled: it must
    arrive as the same BadImageError (a DatasetFormatError, which the CLI prints as one
    line), and skipping must give the batches the in-process stream gives."""
    labels = np.repeat(np.arange(4), 2)
    paths = _write_images(tmp_path, 8)
    _truncate(paths[3])
    kwargs = dict(p=2, k=2, image_size=IMAGE_SIZE, seed=0)
    stop = iter(pipeline.make_pk_train_loader(labels, paths, num_workers=1, **kwargs))
    try:
        with pytest.raises(BadImageError, match=r"3\.jpg, field 'image': cannot read") as error:
            for _ in range(6):
                next(stop)
    finally:
        stop.close()
    assert error.value.path == paths[3] and error.value.field == "image"
    skip = iter(
        pipeline.make_pk_train_loader(labels, paths, num_workers=1, bad_images="skip", **kwargs)
    )
    try:
        with_workers = [next(skip) for _ in range(6)]
    finally:
        skip.close()
    serial = iter(pipeline.make_pk_train_loader(labels, paths, bad_images="skip", **kwargs))
    assert sum(int(b["skipped"].sum()) for b in with_workers) > 0
    for a in with_workers:
        b = next(serial)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
