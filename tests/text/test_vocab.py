"""Tests for the SSAN word vocabulary against an independent re-derivation of ssan §1.3/§1.4."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.text import vocab as vocab_lib


def _reference_preprocess(train_tokens, captions, *, min_count, max_length):
    """Plain re-statement of ssan §1.3/§1.4 with dicts and loops (no shared code)."""
    counts = {}
    for tokens in train_tokens:
        for token in tokens:
            word = token.lower()
            counts[word] = counts.get(word, 0) + 1
    kept = [w for w, c in counts.items() if c >= min_count]
    ids_of = {w: p + 1 for p, w in enumerate(kept)}
    ids = np.zeros((len(captions), max_length), np.int32)
    lengths = np.zeros(len(captions), np.int32)
    for i, tokens in enumerate(captions):
        enc = [ids_of[t] for t in tokens if t in ids_of][:max_length]
        ids[i, : len(enc)] = enc
        lengths[i] = max(len(enc), 1)
    return kept, ids, lengths


def test_first_occurrence_order_not_frequency():
    tokens = [["b", "a", "a"], ["c", "b", "a", "c"], ["a", "d"]]
    vocab = vocab_lib.build_vocabulary(tokens)
    # Frequency order would be a (4), b (2), c (2); first occurrence is b, a, c. d (1) dropped.
    assert vocab.words == ("b", "a", "c")
    assert dict(vocab.word_to_id) == {"b": 1, "a": 2, "c": 3}


def test_min_count_and_lowercasing():
    tokens = [["Red", "red", "shirt"], ["RED", "bag", "Shirt"], ["bag", "hat"]]
    assert vocab_lib.build_vocabulary(tokens).words == ("red", "shirt", "bag")
    assert vocab_lib.build_vocabulary(tokens, min_count=3).words == ("red",)
    assert vocab_lib.build_vocabulary(tokens, min_count=1).words == ("red", "shirt", "bag", "hat")
    with pytest.raises(ValueError):
        vocab_lib.build_vocabulary(tokens, min_count=0)


def test_encode_deletes_unknown_tokens():
    vocab = vocab_lib.Vocabulary(("a", "man", "red"))
    assert vocab.encode(["a", "tall", "man", "in", "red"]) == [1, 2, 3]
    # Raw lookup (reference) vs lower-cased lookup.
    assert vocab.encode(["A", "Man"]) == []
    assert vocab.encode(["A", "Man"], lowercase=True) == [1, 2]


def test_encode_batch_truncation_and_padding():
    vocab = vocab_lib.Vocabulary(("w0", "w1", "w2", "w3", "w4", "w5"))
    captions = [["w0", "w1", "w2", "w3", "w4", "w5"], ["w2", "x", "w1"], ["w5", "w5", "w5", "w5"]]
    ids, lengths = vocab_lib.encode_batch(vocab, captions, max_length=4)
    assert ids.dtype == np.int32 and lengths.dtype == np.int32
    np.testing.assert_array_equal(ids, [[1, 2, 3, 4], [3, 2, 0, 0], [6, 6, 6, 6]])
    np.testing.assert_array_equal(lengths, [4, 2, 4])


def test_empty_after_encoding_guard(caplog):
    vocab = vocab_lib.Vocabulary(("a", "b"))
    with caplog.at_level(logging.WARNING):
        ids, lengths = vocab_lib.encode_batch(vocab, [["zz", "yy"], ["b"], []], max_length=3)
    np.testing.assert_array_equal(ids, [[0, 0, 0], [2, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [1, 1, 1])
    assert "2 caption(s) encode to no token" in caplog.text


def test_table_size_check():
    vocab = vocab_lib.Vocabulary(("a", "b", "c"))
    vocab_lib.encode_batch(vocab, [["a"]], table_size=4)  # V + 1 == 4 fits.
    with pytest.raises(ValueError, match="table size"):
        vocab_lib.encode_batch(vocab, [["a"]], table_size=3)


def test_random_corpus_matches_reference():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    # Zipf-like draws so that many words fall below min_count; mixed case exercises lowering.
    probs = 1.0 / np.arange(1, 41)
    probs /= probs.sum()

    def caption():
        n = int(rng.integers(0, 14))
        picked = rng.choice(words, size=n, p=probs)
        return [w.upper() if rng.random() < 0.1 else w for w in picked]

    train = [caption() for _ in range(60)]
    test = [caption() for _ in range(30)]
    vocab = vocab_lib.build_vocabulary(train, min_count=2)
    kept, want_ids, want_lengths = _reference_preprocess(train, test, min_count=2, max_length=8)
    assert list(vocab.words) == kept
    ids, lengths = vocab_lib.encode_batch(vocab, test, max_length=8, table_size=len(kept) + 1)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(lengths, want_lengths)
    assert ids.max() <= len(vocab)


def test_save_load_round_trip(tmp_path):
    vocab = vocab_lib.Vocabulary(("a", "café", "t-shirt", "ünï"))
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert os.listdir(tmp_path) == ["vocab.json"]  # No temporary file left behind.
    loaded = vocab_lib.Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.encode(["café", "x", "ünï"]) == [2, 4]


def test_load_rejects_bad_files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="bad.json"):
        vocab_lib.Vocabulary.load(bad_json)
    duplicate = tmp_path / "dup.json"
    duplicate.write_text(
        json.dumps({"format": "reid_jax.word_vocabulary", "version": 1, "words": ["a", "a"]})
    )
    with pytest.raises(DatasetFormatError, match="field 'words'"):
        vocab_lib.Vocabulary.load(duplicate)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"words": ["a"]}))
    with pytest.raises(DatasetFormatError, match="field 'format'"):
        vocab_lib.Vocabulary.load(other)
