"""Host-side MLM/MAM masking generator of APTM (aptm §1.6), NumPy only, keyed randomness.

The generator works on the *padded* id vector: every position except [CLS] is a candidate,
[SEP] and [PAD] included, so a 56-token caption always gets 10 masked positions even when half
of them are padding (aptm §1.6 "Consequence"; reproduced for fidelity, not restricted to real
tokens). Outputs have static shapes (§8.3): ids [Lp], positions [M], labels [M] with -100.

Randomness comes from a ``numpy.random.Generator`` the caller seeds from (seed, epoch, index),
so masks resume exactly; it is not bit-identical to the reference's Python ``random`` stream.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

IGNORE_INDEX = -100
BERT_MASK_ID = 103
BERT_VOCAB_SIZE = 30522


def continuation_table(vocab: Mapping[str, int]) -> np.ndarray:
    """Which vocabulary ids are WordPiece continuation pieces (``##...``).

    Args:
      vocab: token -> id mapping (e.g. ``reid_jax.text.wordpiece.load_vocab_file``).

    Returns:
      [V] bool, V = max id + 1.
    """
    table = np.zeros(max(vocab.values()) + 1, bool)
    for token, index in vocab.items():
        table[index] = token.startswith("##")
    return table


def masking_budget(length: int, *, mask_prob: float = 0.25, max_masked: int = 10) -> int:
    """``min(max_masked, max(1, round(mask_prob * length)))`` with round-half-to-even (§1.6).

    Args:
      length: padded sequence length Lp (56 for captions).
      mask_prob: fraction (0.25).
      max_masked: cap (10).

    Returns:
      number of positions to mask (10 for Lp = 56, 2 for Lp = 10, 4 for Lp = 15).
    """
    return min(max_masked, max(1, round(length * mask_prob)))


def choose_positions(
    token_ids: np.ndarray,
    continuation: np.ndarray,
    rng: np.random.Generator,
    *,
    budget: int,
    span_prob: float = 0.2,
    max_span: int = 3,
) -> np.ndarray:
    """Positions to mask in one padded sequence: shuffled candidates, spans, whole words (§1.6).

    Candidates are ``1 .. Lp-1`` in random order. For each candidate not yet taken: with
    probability ``span_prob`` a span of ``U{2, max_span}`` tokens, else 1 token; the span start
    moves left while it sits on a ``##`` piece and the (exclusive) end moves right while the
    token there is a ``##`` piece; its positions are added left to right until one falls
    outside ``1 .. Lp-1``. Stops once ``budget`` positions are taken; a surplus (from the last
    span) is cut to a random subset of ``budget``.

    Args:
      token_ids: [Lp] int padded ids, [CLS] first.
      continuation: [V] bool table from :func:`continuation_table`.
      rng: NumPy generator.
      budget: n of :func:`masking_budget`.
      span_prob: probability of a multi-token span (0.2).
      max_span: longest span (3).

    Returns:
      [n] int64 sorted positions (n = min(budget, Lp - 1)).
    """
    length = len(token_ids)
    is_piece = continuation[np.asarray(token_ids)]
    chosen: set[int] = set()
    for start in rng.permutation(np.arange(1, length)):
        if len(chosen) >= budget:
            break
        if start in chosen:
            continue
        span = int(rng.integers(2, max_span + 1)) if rng.random() < span_prob else 1
        begin, end = int(start), int(start) + span
        while begin >= 0 and is_piece[begin]:
            begin -= 1
        while end < length and is_piece[end]:
            end += 1
        for position in range(begin, end):
            if not 0 < position < length:
                break
            chosen.add(position)
    positions = np.array(sorted(chosen), np.int64)
    if len(positions) > budget:
        positions = np.sort(rng.choice(positions, budget, replace=False))
    return positions


def mask_sequence(
    token_ids: np.ndarray,
    continuation: np.ndarray,
    rng: np.random.Generator,
    *,
    num_positions: int = 10,
    mask_prob: float = 0.25,
    max_masked: int = 10,
    mask_id: int = BERT_MASK_ID,
    vocab_size: int = BERT_VOCAB_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks one padded sequence for MLM/MAM (aptm §1.6).

    Each chosen position becomes [MASK] with p = 0.8, else a uniform id in ``[0, vocab_size)``
    with p = 0.5 (special tokens included), else stays. Labels are the original ids, so they
    can be [SEP] (102) or [PAD] (0).

    Args:
      token_ids: [Lp] int padded ids, [CLS] first.
      continuation: [V] bool table from :func:`continuation_table`.
      rng: NumPy generator (seed it from (seed, epoch, index)).
      num_positions: M, static length of the outputs (10; >= the budget).
      mask_prob, max_masked: budget parameters of :func:`masking_budget`.
      mask_id: [MASK] id (103).
      vocab_size: V for random replacement (30522).

    Returns:
      masked_ids: [Lp] int32 ids after replacement.
      positions: [M] int32 masked positions, padded with 0.
      labels: [M] int32 original ids at those positions, padded with -100.
    """
    token_ids = np.asarray(token_ids)
    budget = masking_budget(len(token_ids), mask_prob=mask_prob, max_masked=max_masked)
    if budget > num_positions:
        raise ValueError(f"num_positions={num_positions} is below the masking budget {budget}")
    chosen = choose_positions(token_ids, continuation, rng, budget=budget)
    masked_ids = token_ids.astype(np.int32).copy()
    for position in chosen:
        if rng.random() < 0.8:
            masked_ids[position] = mask_id
        elif rng.random() < 0.5:
            masked_ids[position] = rng.integers(0, vocab_size)
    positions = np.zeros(num_positions, np.int32)
    labels = np.full(num_positions, IGNORE_INDEX, np.int32)
    positions[: len(chosen)] = chosen
    labels[: len(chosen)] = token_ids[chosen]
    return masked_ids, positions, labels


def mask_batch(
    token_ids: np.ndarray, continuation: np.ndarray, rng: np.random.Generator, **kwargs
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mask_sequence` over the rows of a batch (or a prompt set), one generator.

    Args:
      token_ids: [B, Lp] int padded ids.
      continuation: [V] bool table.
      rng: NumPy generator.
      **kwargs: forwarded to :func:`mask_sequence`.

    Returns:
      (masked_ids [B, Lp] int32, positions [B, M] int32, labels [B, M] int32).
    """
    rows = [mask_sequence(row, continuation, rng, **kwargs) for row in np.asarray(token_ids)]
    return tuple(np.stack(parts) for parts in zip(*rows, strict=True))
