"""Caption grammar: visibility, MALS label semantics re-derived by keyword matching, tokens."""

import re

import numpy as np
import pytest

from reid_jax.data.synthetic import ATTRIBUTE_NAMES
from reid_jax.data.synthetic.attributes import LOWER_COLOURS, UPPER_COLOURS, sample_identity
from reid_jax.data.synthetic.captions import make_caption, mals_label, tokenize
from reid_jax.data.synthetic.scene import sample_scene

NOTHING = r"not carrying anything|carries nothing|carrying nothing|has no bags"
# Independent keyword rules: when does a caption mention each attribute group?
KEYWORDS = {
    "gender": r"\b(man|woman|boy|girl|guy|lady|male|female|gentleman|he|she|his|her)\b",
    "age": r"\b(little|young|boy|girl|kid|child|teenage|teen|teenager|middle-aged|adult|old"
    r"|elderly|older|senior)\b",
    "hair": r"\b(short|cropped|long) (\w+ )?hair\b|ponytail",
    "hat": r"\b(hat|cap|beanie)\b",
    "backpack": rf"\b(backpack|rucksack)\b|{NOTHING}",
    "handbag": rf"\b(handbag|purse)\b|{NOTHING}",
    "bag": rf"\b(shoulder bag|messenger bag|crossbody bag|bag over)\b|{NOTHING}",
    "up": r"\b(short|long)[ -]sleeve(d)?\b|\b(t-shirt|tee shirt|polo shirt|jacket|sweater"
    r"|hoodie|coat)\b",
    "down": r"\b(pants|trousers|slacks|jeans|shorts)\b"
    r"|\b(short|mini|knee-length|long|ankle-length|maxi) ([\w-]+ ){0,2}skirt\b",
    "clothes": r"\b(pants|trousers|slacks|jeans|shorts|skirt)\b",
}


def _colour_words(colour):
    return ("gray", "grey") if colour == "gray" else (colour,)


@pytest.fixture(scope="module")
def samples():
    out = []
    for i in range(700):
        ident = sample_identity(np.random.default_rng([3, i]))
        scene = sample_scene(
            np.random.default_rng([4, i]), ident, 1 + i % 6, clean=bool(i % 5 == 0)
        )
        style = "blip" if i % 3 == 0 else "annotator"
        caption = make_caption(ident, scene, np.random.default_rng([5, i]), style=style)
        out.append((ident, scene, caption, style))
    return out


def test_only_visible_items_are_mentioned(samples):
    front = 0
    for ident, scene, caption, _ in samples:
        text = caption.text.lower()
        if scene.view == "front":
            front += ident.backpack
            assert not re.search(r"backpack|rucksack", text), text
        if not scene.visible.handbag:
            assert not re.search(r"handbag|purse", text), text
        if not scene.visible.shoes:
            assert not re.search(r"\b(shoes|sneakers|boots|trainers)\b", text), text
        if not scene.visible.logo:
            assert "logo" not in text
        if re.search(NOTHING, text):  # "carries nothing" only when that is true
            assert not (ident.backpack or ident.bag or ident.handbag)
    assert front > 10  # front views of backpack wearers were exercised


def test_backpack_is_described_from_behind():
    mentioned = 0
    for i in range(60):
        ident = sample_identity(np.random.default_rng([8, i]))
        scene = sample_scene(np.random.default_rng([9, i]), ident, 1, view="back")
        if ident.backpack:
            text = make_caption(ident, scene, np.random.default_rng([10, i])).text.lower()
            mentioned += bool(re.search(r"backpack|rucksack", text))
    assert mentioned >= 5


def test_label_is_minus_one_iff_not_mentioned(samples):
    for ident, _, caption, _ in samples:
        label = dict(zip(ATTRIBUTE_NAMES, mals_label(ident, caption.mentioned), strict=True))
        text = caption.text.lower()
        for group, pattern in KEYWORDS.items():
            said = bool(re.search(pattern, text))
            assert (label[group] != -1) == said, (group, text, label[group])
        for part, colours, worn in (
            ("up", UPPER_COLOURS, ident.upper_colour),
            ("down", LOWER_COLOURS, ident.lower_colour),
        ):
            values = [label[part + c] for c in colours]
            if values[0] == -1:
                assert set(values) == {-1}
                continue
            # Known colour: the caption names the worn colour; exactly it is "wears" (0).
            assert any(w in text for w in _colour_words(worn)), text
            expected = [0 if c == worn else 1 for c in colours]
            assert values == expected


def test_known_labels_agree_with_identity(samples):
    for ident, _, caption, _ in samples:
        label = dict(zip(ATTRIBUTE_NAMES, mals_label(ident, caption.mentioned), strict=True))
        truth = {
            "gender": int(not ident.female),
            "age": int(ident.age >= 2),
            "hair": int(ident.long_hair),
            "hat": int(not ident.hat),
            "backpack": int(not ident.backpack),
            "handbag": int(not ident.handbag),
            "bag": int(not ident.bag),
            "up": int(ident.short_sleeve),
            "down": int(ident.short_lower),
            "clothes": int(not ident.skirt),
        }
        for name, value in truth.items():
            assert label[name] in (-1, value), (name, caption.text)


def test_styles_and_variety(samples):
    texts = [c.text for _, _, c, _ in samples]
    assert len(set(texts)) == len(texts)
    for _, _, caption, style in samples:
        if style == "blip":
            assert caption.text == caption.text.lower() and not caption.text.endswith(".")
        else:
            assert caption.text[0].isupper() or caption.text == caption.text.lower()
    lengths = [len(tokenize(t)) for t in texts]
    assert 8 <= np.mean(lengths) <= 40
    vocab = {tok for t in texts for tok in tokenize(t)}
    assert len(vocab) > 150


def test_tokenize_splits_punctuation_and_lowercases(samples):
    assert tokenize("A man, in a T-shirt.") == ["a", "man", ",", "in", "a", "t-shirt", "."]
    assert tokenize("The person's bag") == ["the", "person", "'s", "bag"]
    for _, _, caption, _ in samples:
        tokens = tokenize(caption.text)
        assert all(t == t.lower() and " " not in t for t in tokens)
        assert "".join(tokens) == re.sub(r"\s+", "", caption.text.lower())


def test_caption_is_a_function_of_its_generator():
    ident = sample_identity(np.random.default_rng(1))
    scene = sample_scene(np.random.default_rng(2), ident, 3)
    a = make_caption(ident, scene, np.random.default_rng(3))
    b = make_caption(ident, scene, np.random.default_rng(3))
    assert a == b
