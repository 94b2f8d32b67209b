"""Tests for reid_jax.text.eda, the EDA caption view of aptm §1.5 (synonyms from a table)."""

import collections

import numpy as np
import pytest

from reid_jax.text import eda

_SYNONYMS = {"man": ["guy"], "shirt": ["top", "tee"], "red": ["crimson"]}


def _synonyms(word):
    return _SYNONYMS.get(word, [])


def test_letters_only():
    assert eda.letters_only("A man's T-shirt,  RED 2x!") == "a mans t shirt red x"


def test_each_technique_and_its_invariants():
    sentence = "The man wears a red shirt and the man carries a bag"
    words = eda.letters_only(sentence).split()
    outcomes = collections.Counter()
    for seed in range(200):
        out = eda.eda_caption(sentence, np.random.default_rng(seed), synonyms=_synonyms).split()
        if {"guy", "crimson", "top", "tee"} & set(out):
            if len(out) > len(words):
                outcomes["insertion"] += 1
            else:
                outcomes["replacement"] += 1
                assert "man" not in out or "guy" not in out  # every occurrence replaced
        elif sorted(out) == sorted(words) and out != words:
            outcomes["swap"] += 1
        elif len(out) < len(words):
            outcomes["deletion"] += 1
            assert set(out) <= set(words)
        else:
            assert out == words  # e.g. deletion that dropped nothing
    assert all(outcomes[k] > 10 for k in ("insertion", "replacement", "swap", "deletion"))


def test_stop_words_are_never_replaced_and_output_is_keyed():
    table = {"the": ["thee"], "a": ["one"]}
    for seed in range(30):
        out = eda.eda_caption(
            "the a the a", np.random.default_rng(seed), synonyms=lambda w: table.get(w, [])
        )
        assert "thee" not in out.split() or len(out.split()) == 5  # only via insertion
    a = eda.eda_caption("a man in a red shirt", np.random.default_rng(3), synonyms=_synonyms)
    b = eda.eda_caption("a man in a red shirt", np.random.default_rng(3), synonyms=_synonyms)
    assert a == b


def test_deletion_keeps_a_word_and_truncation():
    for seed in range(20):
        assert eda.eda_caption("man", np.random.default_rng(seed), synonyms=_synonyms)
    long = " ".join(["shirt"] * 80)
    assert len(eda.eda_caption(long, np.random.default_rng(0), synonyms=_synonyms).split()) <= 56
    with pytest.raises(ValueError, match="without letters"):
        eda.eda_caption("123 !!", np.random.default_rng(0), synonyms=_synonyms)
