"""BERT WordPiece tokenization from a user-supplied `vocab.txt` (APTM text pipeline, aptm §1.5).

Reimplements the uncased BERT tokenizer used by APTM (`bert-base-uncased`):

1. Special tokens (`[CLS] [SEP] [PAD] [MASK] [UNK]`) written literally in the text are kept as
   single tokens and never split or lower-cased.
2. Basic tokenization of the remaining text: drop NUL, U+FFFD and control characters, map
   every whitespace character to a space, put spaces around CJK ideographs, split on
   whitespace; per token lower-case and strip accents (NFD, drop combining marks, category
   Mn), then split every punctuation character (ASCII symbols 33-47, 58-64, 91-96, 123-126 and
   Unicode category P*) into its own token.
3. WordPiece: greedy longest-match-first over each basic token; pieces after the first carry
   the `##` prefix; a word longer than 100 characters, or one that cannot be fully covered by
   vocabulary pieces, becomes a single `[UNK]`.

`encode` adds `[CLS]` ... `[SEP]`, truncates the pieces so that the whole fits in T (the tail
is dropped, `[SEP]` kept), and pads with `[PAD]`; the attention mask is 1 on real tokens.
Pure Python + NumPy; no `transformers` needed.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np

from reid_jax.data.errors import DatasetFormatError

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")

# CJK Unified Ideographs blocks treated as single-character words by BERT (not Hangul/kana).
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_LOWER_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")
_ASCII_TOKEN = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]")

_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def load_vocab_file(path: str | os.PathLike) -> dict[str, int]:
    """Reads a BERT `vocab.txt`: one token per line, the 0-based line number is its id.

    Args:
      path: the vocabulary file (UTF-8).

    Returns:
      token -> id. A token listed twice keeps its last line number, like the reference.
    """
    vocab = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\r\n")] = index
    return vocab


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    # Tab/newline/CR count as whitespace, not control.
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    # All non-alphanumeric ASCII counts as punctuation (e.g. "$", "^", "`"), as in BERT.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def basic_tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """BERT basic tokenization of text that contains no special token (step 2 above).

    Args:
      text: raw text.
      lowercase: lower-case and strip accents (uncased models).

    Returns:
      word and punctuation tokens.
    """
    if text.isascii():
        # Fast path, same result: in ASCII, control characters are 0-31 and 127 except tab/LF/CR,
        # no character has an accent or is CJK, and every printable non-alphanumeric character
        # is punctuation.
        text = _ASCII_CONTROL.sub("", text)
        if lowercase:
            return _ASCII_LOWER_TOKEN.findall(text.lower())
        return _ASCII_TOKEN.findall(text)
    return _basic_tokenize_unicode(text, lowercase=lowercase)


def _basic_tokenize_unicode(text: str, *, lowercase: bool) -> list[str]:
    """The general (character by character) path of `basic_tokenize`."""
    chars = []
    for char in text:
        if char in ("\x00", "\ufffd") or _is_control(char):
            continue
        if _is_whitespace(char):
            chars.append(" ")
        elif _is_cjk(char):
            chars.extend((" ", char, " "))
        else:
            chars.append(char)
    tokens = []
    for token in "".join(chars).split():
        if lowercase:
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
        current = []
        for char in token:
            if _is_punctuation(char):
                if current:
                    tokens.append("".join(current))
                    current = []
                tokens.append(char)
            else:
                current.append(char)
        if current:
            tokens.append("".join(current))
    return tokens


class WordPieceTokenizer:
    """Uncased BERT tokenizer over a given vocabulary.

    Args:
      vocab: token -> id (e.g. from `load_vocab_file`); must contain the five special tokens.
      lowercase: lower-case and strip accents (True for `bert-base-uncased`).
      max_input_chars_per_word: longer words become `[UNK]` (100 in BERT).
      source: where `vocab` came from, used in error messages.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        *,
        lowercase: bool = True,
        max_input_chars_per_word: int = 100,
        source: str = "<vocab>",
    ):
        self.vocab = dict(vocab)
        self.lowercase = lowercase
        self.max_input_chars_per_word = max_input_chars_per_word
        for token in SPECIAL_TOKENS:
            if token not in self.vocab:
                raise DatasetFormatError(source, f"special token {token} is missing", field=token)
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.pad_id = self.vocab["[PAD]"]
        self.mask_id = self.vocab["[MASK]"]
        self.unk_id = self.vocab["[UNK]"]
        # Captions reuse a small set of words: cache the per-word piece split.
        self._word_pieces = functools.lru_cache(maxsize=1 << 16)(self._word_pieces_uncached)

    @classmethod
    def from_vocab_file(cls, path: str | os.PathLike, **kwargs) -> WordPieceTokenizer:
        """Builds the tokenizer from a `vocab.txt` file.

        Args:
          path: BERT vocabulary file.
          **kwargs: `lowercase`, `max_input_chars_per_word`.

        Returns:
          the tokenizer.
        """
        return cls(load_vocab_file(path), source=os.fspath(path), **kwargs)

    @property
    def vocab_size(self) -> int:
        """Number of embedding rows the ids need (max id + 1)."""
        return max(self.vocab.values()) + 1

    def _word_pieces_uncached(self, word: str) -> tuple[str, ...]:
        if len(word) > self.max_input_chars_per_word:
            return ("[UNK]",)
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:  # No piece matches here: the whole word is unknown.
                return ("[UNK]",)
            pieces.append(piece)
            start = end
        return tuple(pieces)

    def tokenize(self, text: str) -> list[str]:
        """Splits text into WordPiece tokens (no `[CLS]`/`[SEP]`).

        Args:
          text: raw text; literal special tokens are kept whole.

        Returns:
          piece strings, e.g. ["un", "##aff", "##able"].
        """
        pieces = []
        for chunk in _SPECIAL_SPLIT.split(text):
            if chunk in SPECIAL_TOKENS:
                pieces.append(chunk)
                continue
            for word in basic_tokenize(chunk, lowercase=self.lowercase):
                pieces.extend(self._word_pieces(word))
        return pieces

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Maps piece strings to ids; strings outside the vocabulary map to `[UNK]`."""
        return [self.vocab.get(token, self.unk_id) for token in tokens]

    def encode(self, text: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Encodes one text as `[CLS] pieces [SEP] [PAD]...` of exactly `max_length` tokens.

        Args:
          text: raw text.
          max_length: T >= 2; pieces beyond T - 2 are dropped (the `[SEP]` is kept).

        Returns:
          input_ids: [T] int32. attention_mask: [T] int32, 1 on `[CLS]`, pieces and `[SEP]`.
        """
        ids, mask = self.encode_batch([text], max_length=max_length)
        return ids[0], mask[0]

    def encode_batch(
        self, texts: Sequence[str], *, max_length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes N texts to padded `[N, T]` arrays.

        Args:
          texts: N raw texts.
          max_length: T (truncate and pad to exactly T, as for APTM captions, T = 56); None pads
            to the longest encoded text without truncating (as for the APTM attribute prompts).

        Returns:
          input_ids: [N, T] int32, `[PAD]` id after `[SEP]`. attention_mask: [N, T] int32.
        """
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        rows = []
        for text in texts:
            ids = self.convert_tokens_to_ids(self.tokenize(text))
            if max_length is not None:
                ids = ids[: max_length - 2]
            rows.append([self.cls_id, *ids, self.sep_id])
        width = max_length if max_length is not None else max((len(r) for r in rows), default=2)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        attention_mask = np.zeros((len(rows), width), dtype=np.int32)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask
