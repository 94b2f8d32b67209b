"""EDA ("Easy Data Augmentation") caption view for APTM fine-tuning (aptm §1.5, §4.4).

One augmented sentence per caption: the four standard techniques (synonym replacement, random
insertion, random swap, random deletion; alpha = p = 0.1) each build one candidate, and one of
them is kept uniformly at random. Host-side pure Python; randomness comes from a
``numpy.random.Generator`` the caller seeds from (seed, epoch, index). Synonyms come from a
callable so tests and offline runs need no corpus; :func:`wordnet_synonyms` is the reference's
source (NLTK WordNet, imported lazily; ``pip install nltk`` plus its ``wordnet`` corpus).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

Synonyms = Callable[[str], Sequence[str]]

# The stop-word list of the original EDA implementation (words never synonym-replaced).
STOP_WORDS = frozenset(
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself "
    "she her hers herself it its itself they them their theirs themselves what which who whom "
    "this that these those am is are was were be been being have has had having do does did "
    "doing a an the and but if or because as until while of at by for with about against "
    "between into through during before after above below to from up down in out on off over "
    "under again further then once here there when where why how all any both each few more "
    "most other some such no nor not only own same so than too very s t can will just don "
    "should now".split()
    + [""]
)

_NON_LETTER_RUN = re.compile(r"[^a-z ]+")


def letters_only(sentence: str) -> str:
    """Lower-case letters and single spaces only (apostrophes removed, the rest -> space)."""
    sentence = sentence.lower().replace("'", "").replace("-", " ")
    return " ".join(_NON_LETTER_RUN.sub(" ", sentence).split())


def wordnet_synonyms(word: str) -> list[str]:
    """WordNet lemma names of every synset of ``word``, cleaned to letters, ``word`` excluded.

    Raises ImportError naming the missing package when NLTK is not installed.
    """
    try:
        from nltk.corpus import wordnet
    except ImportError as error:  # pragma: no cover - depends on the machine
        raise ImportError("EDA synonyms need `nltk` and its `wordnet` corpus") from error
    found: list[str] = []
    for synset in wordnet.synsets(word):
        for lemma in synset.lemmas():
            name = letters_only(lemma.name().replace("_", " "))
            if name and name != word and name not in found:
                found.append(name)
    return found


def _synonym_replacement(words, count, synonyms, rng):
    new_words = list(words)
    candidates = sorted({w for w in words if w not in STOP_WORDS})
    replaced = 0
    for index in rng.permutation(len(candidates)):
        word = candidates[index]
        options = list(synonyms(word))
        if options:
            choice = options[int(rng.integers(len(options)))]
            new_words = [choice if w == word else w for w in new_words]
            replaced += 1
        if replaced >= count:
            break
    # A multi-word synonym becomes several words.
    return " ".join(new_words).split()


def _random_insertion(words, count, synonyms, rng):
    new_words = list(words)
    for _ in range(count):
        options: list[str] = []
        for _attempt in range(10):
            if not new_words:
                break
            options = list(synonyms(new_words[int(rng.integers(len(new_words)))]))
            if options:
                break
        if not options:
            break
        new_words.insert(int(rng.integers(len(new_words) + 1)), options[0])
    return new_words


def _random_swap(words, count, rng):
    new_words = list(words)
    for _ in range(count):
        if len(new_words) < 2:
            break
        first = int(rng.integers(len(new_words)))
        second = first
        for _attempt in range(4):
            second = int(rng.integers(len(new_words)))
            if second != first:
                break
        new_words[first], new_words[second] = new_words[second], new_words[first]
    return new_words


def _random_deletion(words, probability, rng):
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > probability]
    return kept or [words[int(rng.integers(len(words)))]]


def eda_caption(
    sentence: str,
    rng: np.random.Generator,
    *,
    synonyms: Synonyms = wordnet_synonyms,
    alpha: float = 0.1,
    max_words: int = 56,
) -> str:
    """One EDA view of a caption (aptm §1.5): one of the four techniques, chosen uniformly.

    ``n = max(1, int(alpha * #words))`` replacements / insertions / swaps; deletion drops each
    word with p = alpha (one random word survives if all would go). The sentence is first
    reduced to letters and spaces; the result is truncated to ``max_words`` words. The caller
    applies the ICFG/RSTP cleaning before, where the dataset wants it.

    Args:
      sentence: caption text.
      rng: NumPy generator.
      synonyms: word -> list of synonyms (default WordNet).
      alpha: the shared EDA rate (0.1).
      max_words: word cap (56).

    Returns:
      the augmented caption (may equal the input when no technique changed anything).
    """
    words = letters_only(sentence).split()
    if not words:
        raise ValueError(f"EDA got a caption without letters: {sentence!r}")
    count = max(1, int(alpha * len(words)))
    technique = int(rng.integers(4))
    if technique == 0:
        new_words = _synonym_replacement(words, count, synonyms, rng)
    elif technique == 1:
        new_words = _random_insertion(words, count, synonyms, rng)
    elif technique == 2:
        new_words = _random_swap(words, count, rng)
    else:
        new_words = _random_deletion(words, alpha, rng)
    return " ".join(letters_only(" ".join(new_words)).split()[:max_words])
