"""Caption clean-up before tokenisation: SSAN-style word tokens and APTM `pre_caption`.

Two independent jobs live here because both are a few regexes over one raw sentence:

* `tokenize_caption` turns a raw caption into lower-cased word tokens shaped like the
  `processed_tokens` field of CUHK-PEDES `reid_raw.json` (ssan §1.1), for files that do not
  carry that field (RSTPReid, user text at search time).
* `clean_caption` applies the APTM caption pre-processing rules (aptm §1.5) before the WordPiece
  tokenizer sees the text.

Pure Python, no JAX.
"""

from __future__ import annotations

import re

# Runs of letters/digits (Unicode aware, so accented words stay whole). Punctuation and
# whitespace separate tokens and are dropped, as in CUHK-PEDES `processed_tokens`
# ("shirt, and" -> ["shirt", "and"]). Underscore is not a word character here.
_WORD_RUN = re.compile(r"[^\W_]+")

# aptm §1.5 "ICFG/RSTP cleaning": every run of characters outside [0-9a-z] becomes one space.
_NON_ALPHANUMERIC_RUN = re.compile(r"[^0-9a-z]+")


def tokenize_caption(text: str) -> list[str]:
    """Splits a raw caption into lower-cased word tokens (the `processed_tokens` shape).

    The caption is lower-cased, then every maximal run of letters and digits becomes one token;
    punctuation, symbols, underscores and whitespace only separate tokens and are dropped. So
    "A man's T-shirt, black." -> ["a", "man", "s", "t", "shirt", "black"]. This matches the
    released CUHK-PEDES `processed_tokens` on ordinary words and sentence punctuation
    (ssan §1.1); hyphenated words and contractions are split at the symbol.

    Args:
      text: one raw caption.

    Returns:
      list of tokens, possibly empty (e.g. for a caption of punctuation only).
    """
    return _WORD_RUN.findall(text.lower())


def clean_caption(text: str, max_words: int, *, alphanumeric_only: bool = True) -> str:
    """APTM caption pre-processing (`pre_caption`, aptm §1.5).

    With `alphanumeric_only=True` (the "ICFG/RSTP cleaning" flag of the reference): lower-case,
    replace every run of characters outside `[0-9a-z]` with one space. In both modes: collapse
    whitespace runs to single spaces, strip, and keep the first `max_words` space-separated
    words. Without the flag the case and punctuation are kept (the WordPiece tokenizer
    lower-cases and splits punctuation itself).

    Where the reference applies the flag (aptm §1.5): ICFG/RSTP test and val captions and the
    ICFG/RSTP EDA view -> True; training captions of every dataset (main view) and all CUHK
    captions -> False. Note that lower-casing happens before the character filter, so accented
    letters such as "é" are removed, not transliterated, exactly like the reference regex.

    Args:
      text: one raw caption.
      max_words: maximum number of words kept (56 in every APTM config); must be >= 1.
      alphanumeric_only: apply the ICFG/RSTP character filter.

    Returns:
      the cleaned caption, non-empty.

    Raises:
      ValueError: if `max_words < 1` or the caption is empty after cleaning (the reference
        raises too, because an empty caption cannot be tokenised into a valid query).
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if alphanumeric_only:
        text = _NON_ALPHANUMERIC_RUN.sub(" ", text.lower())
    words = text.split()
    if not words:
        raise ValueError(f"caption is empty after cleaning: {text!r}")
    return " ".join(words[:max_words])
