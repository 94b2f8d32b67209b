"""Tests for caption tokenisation (processed_tokens shape) and APTM pre_caption cleaning."""

from __future__ import annotations

import pytest

from reid_jax.text.cleaning import clean_caption, tokenize_caption


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "A pedestrian with dark hair is wearing red and white shoes, a black hooded "
            "sweatshirt, "
            "and black pants.",
            [
                "a",
                "pedestrian",
                "with",
                "dark",
                "hair",
                "is",
                "wearing",
                "red",
                "and",
                "white",
                "shoes",
                "a",
                "black",
                "hooded",
                "sweatshirt",
                "and",
                "black",
                "pants",
            ],
        ),
        ("A man's T-shirt;  (BLACK)!", ["a", "man", "s", "t", "shirt", "black"]),
        ("Café au lait 2 bags_x", ["café", "au", "lait", "2", "bags", "x"]),
        ("...", []),
        ("", []),
    ],
)
def test_tokenize_caption(text, expected):
    assert tokenize_caption(text) == expected


def test_clean_caption_icfg_rstp_filter():
    text = "The  Woman's T-shirt is RED,\tand -- her bag:  (grey)!! 2 shoes é"
    assert clean_caption(text, 56) == "the woman s t shirt is red and her bag grey 2 shoes"


def test_clean_caption_without_filter_keeps_case_and_punctuation():
    text = "  The Woman's   T-shirt\nis RED. "
    assert clean_caption(text, 56, alphanumeric_only=False) == "The Woman's T-shirt is RED."


def test_clean_caption_truncates_words():
    text = " ".join(f"w{i}" for i in range(70))
    assert clean_caption(text, 56).split() == [f"w{i}" for i in range(56)]
    assert clean_caption("a b c", 2) == "a b"


def test_clean_caption_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        clean_caption("?!. --", 56)
    with pytest.raises(ValueError, match="empty"):
        clean_caption("   ", 56, alphanumeric_only=False)
    with pytest.raises(ValueError):
        clean_caption("a", 0)
