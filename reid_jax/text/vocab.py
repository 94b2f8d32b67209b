"""SSAN word vocabulary: build on training tokens, encode captions to padded id arrays.

Exactly the preprocessing of ssan §1.3 / §1.4:

* count every token of every training caption, lower-cased; keep words seen >= `min_count`
  (2) times, in **first-occurrence order** (not by frequency);
* the word at 0-based position p gets id p + 1; id 0 is padding; there is no UNK id:
  unknown tokens are **deleted** when encoding;
* the embedding table has a fixed size (5000 CUHK-PEDES, 2500 ICFG-PEDES) that must hold
  every id: V + 1 <= table_size;
* captions are truncated to T (100) ids or right-padded with 0.

Empty-caption guard (ssan §1.4): a caption whose tokens are all unknown (or that has no
tokens) would encode to length 0, which breaks the masked BiLSTM (no valid step, max over an
empty set). `encode_batch` keeps such a caption, encodes it as a single padding token with
**length 1** (row of zeros), and logs one warning with the count and the first indices. Rows
are never dropped, so output row i always belongs to input caption i; callers that prefer to
drop them can find them with `lengths == 1 & ids[:, 0] == 0`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from reid_jax.data.errors import DatasetFormatError

PAD_ID = 0
_FORMAT_NAME = "reid_jax.word_vocabulary"
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """An ordered word list; the word at position p has id p + 1 and id 0 is padding.

    Attributes:
      words: the kept words in first-occurrence order, unique, non-empty strings.
    """

    words: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.words, tuple):
            object.__setattr__(self, "words", tuple(self.words))
        seen = set()
        for position, word in enumerate(self.words):
            if not isinstance(word, str) or not word:
                raise ValueError(f"vocabulary word {position} must be a non-empty str: {word!r}")
            if word in seen:
                raise ValueError(f"vocabulary word {position} is a duplicate: {word!r}")
            seen.add(word)

    @functools.cached_property
    def word_to_id(self) -> Mapping[str, int]:
        """Maps each word to its id (position + 1); built once per instance."""
        return {word: position + 1 for position, word in enumerate(self.words)}

    def __len__(self) -> int:
        """Number of kept words V (ids 1 ... V; the table needs V + 1 rows)."""
        return len(self.words)

    def encode(self, tokens: Sequence[str], *, lowercase: bool = False) -> list[int]:
        """Maps tokens to ids, deleting tokens that are not in the vocabulary (ssan §1.3).

        Args:
          tokens: one caption's tokens.
          lowercase: lower-case each token before lookup. The reference looks up the raw
            token (False); CUHK-PEDES `processed_tokens` are already lower-case, so this only
            matters for token lists that keep capitals.

        Returns:
          ids in 1 ... V, in token order; may be shorter than `tokens` or empty.
        """
        lookup = self.word_to_id
        if lowercase:
            tokens = [token.lower() for token in tokens]
        return [lookup[token] for token in tokens if token in lookup]

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON, atomically (temporary file, then rename).

        Args:
          path: destination file; its directory must exist.
        """
        payload = {"format": _FORMAT_NAME, "version": _FORMAT_VERSION, "words": list(self.words)}
        atomic_write_bytes(os.fspath(path), json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary written by `save`.

        Args:
          path: JSON file written by `Vocabulary.save`.

        Returns:
          the vocabulary, equal to the saved one.

        Raises:
          DatasetFormatError: the file is not valid JSON or not a saved vocabulary.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(path, f"not valid JSON ({e})") from e
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT_NAME:
            raise DatasetFormatError(
                path, f"not a saved vocabulary (expected {_FORMAT_NAME!r})", field="format"
            )
        if payload.get("version") != _FORMAT_VERSION:
            raise DatasetFormatError(
                path, f"unsupported version {payload.get('version')!r}", field="version"
            )
        words = payload.get("words")
        if not isinstance(words, list):
            raise DatasetFormatError(path, "must be a list of strings", field="words")
        try:
            return cls(tuple(words))
        except ValueError as e:
            raise DatasetFormatError(path, str(e), field="words") from e


def build_vocabulary(token_lists: Iterable[Sequence[str]], *, min_count: int = 2) -> Vocabulary:
    """Builds the SSAN word vocabulary from the training captions' tokens (ssan §1.3).

    Args:
      token_lists: one token list per training caption (every caption of every image).
      min_count: keep words seen at least this many times (after lower-casing).

    Returns:
      the vocabulary; words in order of their first occurrence in `token_lists`.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    # Counter keeps first-insertion order, which is the order the reference keeps.
    counts = collections.Counter(token.lower() for tokens in token_lists for token in tokens)
    return Vocabulary(tuple(word for word, count in counts.items() if count >= min_count))


def check_table_size(vocab: Vocabulary, table_size: int) -> None:
    """Checks that an embedding table of `table_size` rows holds ids 0 ... V (ssan §1.3.4).

    Args:
      vocab: the vocabulary.
      table_size: number of embedding rows (5000 CUHK-PEDES, 2500 ICFG-PEDES).

    Raises:
      ValueError: if V + 1 > table_size.
    """
    if len(vocab) + 1 > table_size:
        raise ValueError(
            f"vocabulary has {len(vocab)} words, ids 0..{len(vocab)} need {len(vocab) + 1} "
            f"embedding rows but the table size (vocab_size) is {table_size}; raise the "
            "table size or min_count"
        )


def encode_batch(
    vocab: Vocabulary,
    token_lists: Sequence[Sequence[str]],
    *,
    max_length: int = 100,
    table_size: int | None = None,
    lowercase: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes captions to a padded id matrix and lengths (ssan §1.3.3, §1.4).

    Args:
      vocab: the vocabulary.
      token_lists: N token lists.
      max_length: T; ids past T are cut (length becomes T), shorter captions are padded with 0.
      table_size: if given, check V + 1 <= table_size first (`check_table_size`).
      lowercase: see `Vocabulary.encode`.

    Returns:
      ids: [N, T] int32, ids in 0 ... V, 0 = padding.
      lengths: [N] int32 in 1 ... T. A caption with no known token is a row of zeros with
        length 1 (module docstring); a warning reports how many.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if table_size is not None:
        check_table_size(vocab, table_size)
    encoded = [vocab.encode(tokens, lowercase=lowercase)[:max_length] for tokens in token_lists]
    return pad_id_lists(encoded, max_length=max_length, what="word vocabulary")


def pad_id_lists(
    id_lists: Sequence[Sequence[int]], *, max_length: int, what: str = "captions"
) -> tuple[np.ndarray, np.ndarray]:
    """Packs already-truncated id lists into a right-padded matrix (shared by the tokenizers).

    Args:
      id_lists: N lists of ids, each at most `max_length` long, none containing 0.
      max_length: T.
      what: name used in the empty-caption warning.

    Returns:
      ids: [N, T] int32 padded with 0. lengths: [N] int32, empty lists get length 1.
    """
    num = len(id_lists)
    lengths = np.fromiter((len(ids) for ids in id_lists), dtype=np.int64, count=num)
    if np.any(lengths > max_length):
        raise ValueError(f"an id list is longer than max_length={max_length}")
    out = np.zeros((num, max_length), dtype=np.int32)
    total = int(lengths.sum())
    if total:
        flat = np.fromiter((i for ids in id_lists for i in ids), dtype=np.int32, count=total)
        rows = np.repeat(np.arange(num), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(total) - np.repeat(starts, lengths)
        out[rows, cols] = flat
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        logging.warning(
            "%s: %d caption(s) encode to no token; kept as one padding token with "
            "length 1 (first indices: %s)",
            what,
            empty.size,
            empty[:10].tolist(),
        )
    return out, np.maximum(lengths, 1).astype(np.int32)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temporary file in the same directory and a rename.

    Args:
      path: destination file; its directory must exist.
      data: the full file content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; make it a normal data file.
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
