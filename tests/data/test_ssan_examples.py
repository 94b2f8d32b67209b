"""Tests for reid_jax.data.ssan_examples: relabelling, grouping, partner lists, queries."""

import numpy as np
import pytest

from reid_jax.data import ssan_examples
from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.records import CaptionedImage
from reid_jax.text.vocab import Vocabulary


def _record(pid, name, n_captions=2, tokens=True, split="train"):
    captions = tuple(f"{name} cap{j}" for j in range(n_captions))
    toks = tuple((name, f"cap{j}", "shared") for j in range(n_captions)) if tokens else None
    return CaptionedImage(f"/img/{name}.jpg", pid, captions, toks, split)


def _vocab_for(records):
    words = []
    for r in records:
        for tokens in ssan_examples.caption_tokens(r):
            words.extend(t for t in tokens if t not in words)
    return Vocabulary(tuple(words))


def _brute_partners(person_ids, image_index):
    return [
        [
            j
            for j in range(len(person_ids))
            if person_ids[j] == person_ids[i] and image_index[j] != image_index[i]
        ]
        for i in range(len(person_ids))
    ]


def _cuhk_label(pid):
    # ssan §1.3.5 piecewise rule, written out independently.
    if pid <= 1368:
        return pid - 1
    if pid <= 4115:
        return pid - 2
    if pid <= 6115:
        return pid - 3
    return pid - 4


def test_cuhk_relabel_drops_single_image_ids():
    pids = [1, 1368, 1369, 1370, 4115, 4116, 4117, 6115, 6116, 6117, 11003]
    records = []
    for pid in pids:
        n_images = 1 if pid in (1369, 4116, 6116) else 2
        records += [_record(pid, f"p{pid}i{m}") for m in range(n_images)]
    ex = ssan_examples.prepare_ssan_train(records, _vocab_for(records), dataset="cuhk_pedes")
    kept = [p for p in pids if p not in (1369, 4116, 6116)]
    assert sorted(set(ex.person_ids.tolist())) == kept
    for pid, label in zip(ex.person_ids, ex.labels, strict=True):
        assert label == _cuhk_label(int(pid))
    assert ex.labels.dtype == np.int32
    assert ex.num_classes == _cuhk_label(11003) + 1 == 11000
    assert len(ex) == 4 * len(kept)  # 2 images x 2 captions per kept identity


def test_icfg_labels_as_stored_and_generic_first_appearance():
    records = [
        _record(5, "a"),
        _record(0, "b"),
        _record(5, "c"),
        _record(0, "d"),
        _record(2, "e"),
        _record(2, "f"),
    ]
    vocab = _vocab_for(records)
    icfg = ssan_examples.prepare_ssan_train(records, vocab, dataset="icfg_pedes")
    np.testing.assert_array_equal(icfg.labels, icfg.person_ids)
    assert icfg.num_classes == 6
    generic = ssan_examples.prepare_ssan_train(records, vocab, dataset="rstpreid")
    order = {5: 0, 0: 1, 2: 2}
    np.testing.assert_array_equal(generic.labels, [order[int(p)] for p in generic.person_ids])
    assert generic.num_classes == 3


def test_grouping_partners_and_captions():
    records = [
        _record(7, "a", 2),
        _record(3, "b", 1),
        _record(7, "c", 3),
        _record(3, "d", 2),
        _record(9, "e", 2),
        _record(7, "f", 1),
        _record(9, "g", 1),
    ]
    vocab = _vocab_for(records)
    ex = ssan_examples.prepare_ssan_train(records, vocab, dataset="generic", max_length=5)
    # Identities in first-appearance order, then image by image, then caption by caption.
    expected_images = ["a", "c", "f", "b", "d", "e", "g"]
    assert ex.image_paths == [f"/img/{n}.jpg" for n in expected_images]
    caps_per_image = {"a": 2, "b": 1, "c": 3, "d": 2, "e": 2, "f": 1, "g": 1}
    expected_index = np.repeat(np.arange(7), [caps_per_image[n] for n in expected_images])
    np.testing.assert_array_equal(ex.image_index, expected_index)
    assert ex.image_index.dtype == np.int64
    # Captions: vocabulary ids of (name, capj, shared), padded to T=5.
    row = 0
    for name in expected_images:
        for j in range(caps_per_image[name]):
            ids = [vocab.words.index(w) + 1 for w in (name, f"cap{j}", "shared")]
            np.testing.assert_array_equal(ex.captions[row], ids + [0, 0])
            assert ex.lengths[row] == 3
            row += 1
    # CSR partners equal a brute-force derivation.
    brute = _brute_partners(ex.person_ids, ex.image_index)
    assert ex.partner_offsets.shape == (len(ex) + 1,) and ex.partner_offsets[0] == 0
    assert ex.partner_offsets.dtype == np.int64 and ex.partner_indices.dtype == np.int64
    for i, partners in enumerate(brute):
        got = ex.partner_indices[ex.partner_offsets[i] : ex.partner_offsets[i + 1]]
        np.testing.assert_array_equal(got, partners)


def test_partner_lists_random_against_brute_force():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 4, size=40)  # captions per image
    identity = np.repeat(np.sort(rng.integers(0, 8, size=40)), sizes)
    image = np.repeat(np.arange(40), sizes)
    offsets, indices = ssan_examples.partner_lists(identity, image)
    for i, partners in enumerate(_brute_partners(identity, image)):
        np.testing.assert_array_equal(indices[offsets[i] : offsets[i + 1]], partners)


def test_identity_without_partner_is_named():
    records = [_record(4, "a"), _record(4, "b"), _record(8, "lonely")]
    with pytest.raises(DatasetFormatError, match="identity 8") as info:
        ssan_examples.prepare_ssan_train(records, _vocab_for(records), dataset="icfg_pedes")
    assert "lonely.jpg" in str(info.value)
    assert info.value.field == "person_id"


def test_cuhk_bad_id_is_named():
    records = [_record(0, "a"), _record(0, "b")]
    with pytest.raises(DatasetFormatError, match="person id 0"):
        ssan_examples.prepare_ssan_train(records, _vocab_for(records), dataset="cuhk_pedes")


def test_table_size_and_truncation():
    records = [_record(1, "a"), _record(1, "b")]
    vocab = _vocab_for(records)
    with pytest.raises(ValueError, match="table"):
        ssan_examples.prepare_ssan_train(records, vocab, dataset="x", table_size=len(vocab))
    ex = ssan_examples.prepare_ssan_train(records, vocab, dataset="x", max_length=2)
    assert ex.captions.shape == (4, 2) and np.all(ex.lengths == 2)


def test_vocabulary_uses_tokens_or_tokenizer():
    with_tokens = [_record(1, "alpha"), _record(1, "alpha")]
    vocab = ssan_examples.build_ssan_vocabulary_from_records(with_tokens, min_count=2)
    assert vocab.words == ("alpha", "cap0", "shared", "cap1")
    raw = [CaptionedImage("/x.jpg", 1, ("A Red, shirt.", "red SHOES"), None, "train")]
    vocab = ssan_examples.build_ssan_vocabulary_from_records(raw, min_count=1)
    assert vocab.words == ("a", "red", "shirt", "shoes")


def test_prepare_test_queries():
    records = [
        _record(12, "a", 2, split="test"),
        _record(30, "b", 1, split="test"),
        _record(12, "c", 3, split="test"),
    ]
    vocab = _vocab_for(records[:1])  # "b", "c" words are out of vocabulary at test time
    ex = ssan_examples.prepare_ssan_test(records, vocab, max_length=4)
    assert ex.gallery_paths == ["/img/a.jpg", "/img/b.jpg", "/img/c.jpg"]
    np.testing.assert_array_equal(ex.gallery_ids, [12, 30, 12])
    np.testing.assert_array_equal(ex.query_image_index, [0, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(ex.query_ids, [12, 12, 30, 12, 12, 12])
    assert ex.query_texts == ["a cap0", "a cap1", "b cap0", "c cap0", "c cap1", "c cap2"]
    assert ex.query_captions.shape == (6, 4)
    # Unknown words are deleted: "b cap0 shared" keeps "cap0" and "shared" only.
    w = {word: i + 1 for i, word in enumerate(vocab.words)}
    np.testing.assert_array_equal(ex.query_captions[2], [w["cap0"], w["shared"], 0, 0])
    assert ex.query_lengths[2] == 2
    np.testing.assert_array_equal(ex.query_lengths, [3, 3, 2, 2, 2, 1])
