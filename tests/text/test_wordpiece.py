"""Tests for the BERT WordPiece tokenizer on a tiny vocab.txt with hand-derived expectations."""

from __future__ import annotations

import numpy as np
import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.text.wordpiece import WordPieceTokenizer, basic_tokenize, load_vocab_file

_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "un",
    "##want",
    "##ed",
    "runn",
    "##ing",
    ",",
    ".",
    "'",
    "-",
    "a",
    "##a",
    "man",
    "s",
    "t",
    "shirt",
    "cafe",
    "的",
    "!",
    "$",
    "red",
    "##s",
    "wear",
]
_ID = {token: i for i, token in enumerate(_VOCAB)}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert") / "vocab.txt"
    path.write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    return WordPieceTokenizer.from_vocab_file(path)


def test_load_vocab_file_ids_are_line_numbers(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\nhello\r\n##lo\n", encoding="utf-8")
    assert load_vocab_file(path) == {"[PAD]": 0, "hello": 1, "##lo": 2}


@pytest.mark.parametrize(
    "text, expected",
    [
        # Accent stripping, lower-casing, punctuation split, '##' continuation pieces.
        ("UNwant\u00e9d,running", ["un", "##want", "##ed", ",", "runn", "##ing"]),
        ("Caf\u00e9", ["cafe"]),
        ("Cafe\u0301", ["cafe"]),  # Decomposed accent (combining mark) is stripped too.
        ("A man's T-shirt.", ["a", "man", "'", "s", "t", "-", "shirt", "."]),
        # Whole word unknown when any suffix cannot be matched (no partial "un" + [UNK]).
        ("unxyz reds", ["[UNK]", "red", "##s"]),
        # CJK ideographs become single-character words; unknown ones map to [UNK].
        ("\u6211\u7684man", ["[UNK]", "\u7684", "man"]),
        # Control / format characters removed, any Unicode space separates words.
        ("m\u200ban\x00\tred\u3000shirt\ufffd", ["man", "red", "shirt"]),
        # ASCII symbols count as punctuation even if Unicode says Sc ("$").
        ("$red!", ["$", "red", "!"]),
        # Literal special tokens survive whole; lower-case look-alikes are split.
        ("a [MASK] man[SEP]", ["a", "[MASK]", "man", "[SEP]"]),
        ("[mask]", ["[UNK]", "[UNK]", "[UNK]"]),
        ("", []),
    ],
)
def test_tokenize_tricky_cases(tokenizer, text, expected):
    assert tokenizer.tokenize(text) == expected


def test_max_input_chars_per_word(tokenizer):
    # "a" + "##a" * 99 covers a 100-char word; 101 chars exceed the limit -> [UNK].
    assert tokenizer.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert tokenizer.tokenize("a" * 101) == ["[UNK]"]


def test_basic_tokenize_cased_keeps_case_and_accents():
    assert basic_tokenize("Caf\u00e9, OK", lowercase=False) == ["Caf\u00e9", ",", "OK"]


def test_encode_adds_specials_pads_and_truncates(tokenizer):
    ids, mask = tokenizer.encode("a man wear red", max_length=8)
    want = [_ID["[CLS]"], _ID["a"], _ID["man"], _ID["wear"], _ID["red"], _ID["[SEP]"], 0, 0]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 1, 0, 0])
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    # Truncation drops the tail of the pieces and keeps [SEP] last.
    ids, mask = tokenizer.encode("unwanted running man", max_length=5)
    np.testing.assert_array_equal(
        ids, [_ID["[CLS]"], _ID["un"], _ID["##want"], _ID["##ed"], _ID["[SEP]"]]
    )
    assert mask.all()


def test_encode_batch_pads_to_longest_without_max_length(tokenizer):
    ids, mask = tokenizer.encode_batch(["red", "a man wear red shirt", ""])
    assert ids.shape == (3, 7)
    np.testing.assert_array_equal(mask.sum(axis=1), [3, 7, 2])
    np.testing.assert_array_equal(ids[2], [_ID["[CLS]"], _ID["[SEP]"], 0, 0, 0, 0, 0])
    fixed, _ = tokenizer.encode_batch(["red", "a man wear red shirt"], max_length=10)
    assert fixed.shape == (2, 10)
    np.testing.assert_array_equal(fixed[:, :7], ids[:2])


def test_special_ids_and_missing_special_token(tmp_path, tokenizer):
    assert (
        tokenizer.pad_id,
        tokenizer.unk_id,
        tokenizer.cls_id,
        tokenizer.sep_id,
        tokenizer.mask_id,
    ) == (0, 1, 2, 3, 4)
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"vocab.txt.*\[MASK\]"):
        WordPieceTokenizer.from_vocab_file(path)


def test_ascii_fast_path_matches_general_path():
    from reid_jax.text import wordpiece

    rng = np.random.default_rng(0)
    alphabet = [chr(c) for c in range(128)] + ["a", "b", "Z", "9", " "] * 10
    for _ in range(100):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
        for lowercase in (True, False):
            assert wordpiece.basic_tokenize(text, lowercase=lowercase) == (
                wordpiece._basic_tokenize_unicode(text, lowercase=lowercase)
            ), repr(text)
