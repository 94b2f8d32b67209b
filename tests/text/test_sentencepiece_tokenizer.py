"""Tests for the SentencePiece caption tokenizer: determinism, padding contract, save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.text import sentencepiece_tokenizer as sp_lib

_COLOURS = ["red", "black", "white", "blue", "grey", "green", "yellow", "brown"]
_ITEMS = ["shirt", "pants", "shoes", "jacket", "backpack", "skirt", "hat", "shorts"]


def _captions(n, seed):
    rng = np.random.default_rng(seed)
    subjects = ["A man", "The woman", "A person", "This pedestrian", "The girl"]
    out = []
    for _ in range(n):
        parts = [f"{rng.choice(_COLOURS)} {rng.choice(_ITEMS)}" for _ in range(3)]
        out.append(f"{rng.choice(subjects)} is wearing a {parts[0]}, a {parts[1]} and {parts[2]}.")
    return out


@pytest.fixture(scope="module")
def corpus():
    return _captions(200, seed=0)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return sp_lib.train_sentencepiece(corpus, vocab_size=120)


def test_training_is_deterministic(corpus, tokenizer):
    again = sp_lib.train_sentencepiece(corpus, vocab_size=120)
    assert again.model_proto == tokenizer.model_proto
    texts = _captions(20, seed=1)
    ids_a, len_a = tokenizer.encode_batch(texts, max_length=32)
    ids_b, len_b = again.encode_batch(texts, max_length=32)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(len_a, len_b)


def test_id_layout_and_lowercasing(tokenizer):
    assert tokenizer.vocab_size <= 120
    ids = tokenizer.encode("a man is wearing a red shirt")
    assert ids == tokenizer.encode("A MAN is Wearing a RED shirt")  # nmt_nfkc_cf case folding.
    assert min(ids) >= 2  # 0 = pad and 1 = unk are never produced for known text.
    assert sp_lib.UNK_ID in tokenizer.encode("a man with a ☂ umbrella")


def test_encode_batch_matches_encode_with_padding_and_truncation(tokenizer):
    texts = _captions(10, seed=2) + ["red", ""]
    max_length = 12
    ids, lengths = tokenizer.encode_batch(texts, max_length=max_length)
    assert ids.shape == (len(texts), max_length) and ids.dtype == np.int32
    assert lengths.dtype == np.int32
    for row, length, text in zip(ids, lengths, texts, strict=True):
        want = tokenizer.encode(text)[:max_length]
        if not want:  # Empty caption: one padding token, length 1.
            assert length == 1 and not row.any()
            continue
        assert length == len(want)
        np.testing.assert_array_equal(row[:length], want)
        assert not row[length:].any()
    assert (lengths == max_length).any() and (lengths < max_length).any()


def test_save_load_round_trip(tmp_path, tokenizer):
    path = tmp_path / "captions.model"
    tokenizer.save(path)
    assert os.listdir(tmp_path) == ["captions.model"]
    loaded = sp_lib.SentencePieceTokenizer.load(path)
    texts = _captions(5, seed=3)
    np.testing.assert_array_equal(loaded.encode_batch(texts)[0], tokenizer.encode_batch(texts)[0])
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DatasetFormatError, match="bad.model"):
        sp_lib.SentencePieceTokenizer.load(bad)


def test_rejects_empty_corpus():
    with pytest.raises(ValueError, match="no non-empty caption"):
        sp_lib.train_sentencepiece(["", "  "], vocab_size=50)
