"""Tests for reid_jax.text.masking, the MLM/MAM masking generator of aptm §1.6."""

import numpy as np
import pytest

from reid_jax.text import masking

_VOCAB = {"[PAD]": 0, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "a": 200, "##b": 201, "c": 300}
_PIECES = masking.continuation_table(_VOCAB)


def test_continuation_table():
    assert _PIECES.shape == (301,) and _PIECES[201] and not _PIECES[200] and _PIECES.sum() == 1


@pytest.mark.parametrize("length, budget", [(56, 10), (10, 2), (15, 4), (2, 1), (6, 2), (18, 4)])
def test_budget_rounds_half_to_even(length, budget):
    assert masking.masking_budget(length) == budget


def _caption(real_words, length=56):
    ids = [101] + [200] * real_words + [102]
    return np.array(ids + [0] * (length - len(ids)))


def test_caption_always_gets_ten_positions_including_padding_and_sep():
    ids = _caption(5)
    seen_labels = set()
    for seed in range(40):
        masked_ids, positions, labels = masking.mask_sequence(
            ids, _PIECES, np.random.default_rng(seed)
        )
        assert masked_ids.shape == (56,) and positions.shape == labels.shape == (10,)
        assert len(set(positions)) == 10 and positions.min() >= 1 and positions.max() <= 55
        np.testing.assert_array_equal(labels, ids[positions])
        assert masked_ids[0] == 101
        untouched = np.setdiff1d(np.arange(56), positions)
        np.testing.assert_array_equal(masked_ids[untouched], ids[untouched])
        seen_labels |= set(labels.tolist())
    assert {0, 102, 200} <= seen_labels  # [PAD] and [SEP] are predicted too


def test_prompt_positions_are_padded():
    ids = np.array([101, 200, 200, 200, 200, 200, 102, 0, 0, 0])  # Lp = 10 -> 2 positions
    _, positions, labels = masking.mask_sequence(ids, _PIECES, np.random.default_rng(0))
    assert np.all(positions[2:] == 0) and np.all(labels[2:] == -100)
    assert np.all(positions[:2] > 0) and np.all(labels[:2] != -100)


def test_replacement_rates_are_80_10_10():
    ids = _caption(54)  # every candidate is a real token of id 200
    masks = randoms = kept = 0
    rng = np.random.default_rng(1)
    for _ in range(500):
        masked_ids, positions, _ = masking.mask_sequence(ids, _PIECES, rng)
        new = masked_ids[positions]
        masks += np.sum(new == 103)
        kept += np.sum(new == ids[positions])
        randoms += np.sum((new != 103) & (new != ids[positions]))
    total = masks + kept + randoms
    assert abs(masks / total - 0.8) < 0.02
    assert abs(kept / total - 0.1) < 0.015 and abs(randoms / total - 0.1) < 0.015


def test_whole_word_expansion():
    # One 5-piece word at 1..5 and [SEP] at 6; budget 5: a candidate inside the word selects the
    # whole word at once (5 positions, no cut), so [1..5] comes out whenever it is drawn first.
    ids = np.array([101, 200, 201, 201, 201, 201, 102])
    hits = 0
    for seed in range(300):
        got = masking.choose_positions(ids, _PIECES, np.random.default_rng(seed), budget=5)
        assert len(got) == 5 and set(got) <= set(range(1, 7))
        hits += list(got) == [1, 2, 3, 4, 5]
    assert hits / 300 > 0.8  # ~0.86; about 1/6 without whole-word expansion


def test_keyed_and_batched():
    ids = np.stack([_caption(3), _caption(20)])
    first = masking.mask_batch(ids, _PIECES, np.random.default_rng(7))
    again = masking.mask_batch(ids, _PIECES, np.random.default_rng(7))
    other = masking.mask_batch(ids, _PIECES, np.random.default_rng(8))
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert [x.shape for x in first] == [(2, 56), (2, 10), (2, 10)]
    assert not np.array_equal(first[1], other[1])
    with pytest.raises(ValueError, match="budget"):
        masking.mask_sequence(ids[0], _PIECES, np.random.default_rng(0), num_positions=4)
