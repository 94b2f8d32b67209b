"""SentencePiece subword tokenizer trained on training captions (for configs that ask for it).

An alternative to the SSAN word vocabulary (`reid_jax.text.vocab`) with the same output
contract: `[N, T]` int32 ids right-padded with 0 plus `[N]` int32 lengths in 1 ... T.

Id layout of every model trained here: 0 = `<pad>`, 1 = `<unk>`, no BOS/EOS; pieces start at 2.
Unknown characters become id 1 (they are not deleted as in the word vocabulary). A caption that
encodes to no piece (empty string) becomes one padding token with length 1, with a warning,
like `vocab.encode_batch`.

Training is deterministic: single thread, input order kept (no sentence shuffling), fixed
random seed; training twice on the same captions gives byte-identical models.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from reid_jax.data.errors import DatasetFormatError
from reid_jax.text.vocab import atomic_write_bytes, pad_id_lists

PAD_ID = 0
UNK_ID = 1


class SentencePieceTokenizer:
    """Encodes captions with a trained SentencePiece model.

    Args:
      model_proto: the serialised model (the bytes of a `.model` file).
    """

    def __init__(self, model_proto: bytes):
        self._model_proto = bytes(model_proto)
        self._processor = spm.SentencePieceProcessor(model_proto=self._model_proto)
        if self._processor.pad_id() != PAD_ID:
            raise ValueError(f"model must use pad id {PAD_ID}, got {self._processor.pad_id()}")

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and unknown included (embedding-table rows needed)."""
        return int(self._processor.get_piece_size())

    @property
    def model_proto(self) -> bytes:
        """The serialised model."""
        return self._model_proto

    def encode(self, text: str) -> list[int]:
        """Encodes one caption to piece ids (no padding, no truncation).

        Args:
          text: one caption.

        Returns:
          ids in 1 ... vocab_size - 1 (1 = unknown).
        """
        return list(self._processor.encode(text))

    def pieces(self, text: str) -> list[str]:
        """Splits one caption into piece strings (for inspection and debugging).

        Args:
          text: one caption.

        Returns:
          the pieces, e.g. ["▁a", "▁man", "▁in", "▁red"].
        """
        return list(self._processor.encode_as_pieces(text))

    def encode_batch(
        self, texts: Sequence[str], *, max_length: int = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes N captions to a padded id matrix.

        Args:
          texts: N captions.
          max_length: T; longer captions keep their first T ids.

        Returns:
          ids: [N, T] int32, 0 = padding. lengths: [N] int32 in 1 ... T (an empty caption is
          one padding token with length 1).
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        encoded = [ids[:max_length] for ids in self._processor.encode(list(texts))]
        return pad_id_lists(encoded, max_length=max_length, what="sentencepiece")

    def save(self, path: str | os.PathLike) -> None:
        """Writes the `.model` file atomically (temporary name, then rename).

        Args:
          path: destination file; its directory must exist.
        """
        atomic_write_bytes(os.fspath(path), self._model_proto)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
        """Reads a `.model` file written by `save` (or by the sentencepiece trainer).

        Args:
          path: the model file.

        Returns:
          the tokenizer.

        Raises:
          DatasetFormatError: the file is not a SentencePiece model with pad id 0.
        """
        path = os.fspath(path)
        with open(path, "rb") as f:
            proto = f.read()
        try:
            return cls(proto)
        except (RuntimeError, ValueError) as e:
            raise DatasetFormatError(path, f"not a usable SentencePiece model ({e})") from e


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    lowercase: bool = True,
    character_coverage: float = 1.0,
    seed: int = 0,
) -> SentencePieceTokenizer:
    """Trains a SentencePiece model in memory on training captions, deterministically.

    Args:
      texts: training captions (iterated once, in order).
      vocab_size: target number of ids including `<pad>` and `<unk>`. Treated as an upper
        bound: small corpora may yield fewer pieces instead of failing.
      model_type: 'unigram', 'bpe', 'word' or 'char'.
      lowercase: case-fold while normalising (NFKC + case folding); else NFKC only.
      character_coverage: fraction of characters covered by the alphabet; 1.0 keeps all.
      seed: random seed of the trainer.

    Returns:
      the trained tokenizer (save it with `.save(path)`).
    """
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError("no non-empty caption to train SentencePiece on")
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        eos_id=-1,
        # Determinism: one thread, keep input order, never sample a subset.
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return SentencePieceTokenizer(model.getvalue())
