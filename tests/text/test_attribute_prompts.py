"""Tests for reid_jax.text.attribute_prompts: exact strings of aptm §2.2/§2.3, mapping §2.1."""

import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.text import attribute_prompts

# Transcribed from the spec tables, one (label 0, label 1) pair per attribute.
_MALS = [
    ("the person is a woman", "the person is a man"),
    ("the person is younger than 18 years old", "the person is older than 18 years old"),
    ("the person with short hair", "the person with long hair"),
    ("the person with a hat", "the person without a hat"),
    ("the person with a backpack", "the person without a backpack"),
    ("the person with a handbag", "the person without a handbag"),
    ("the person with a bag", "the person without a bag"),
    ("the person wears long sleeved upper clothes", "the person wears short sleeved upper clothes"),
    ("the person wears long dress or long pants", "the person wears short dress or short pants"),
    ("the person wears dress or skirt", "the person wears pants or shorts"),
] + [
    (f"the person wears {c} {part} clothes", f"the person does not wear {c} {part} clothes")
    for part, colours in (
        ("upper", "black white red purple yellow blue green gray"),
        ("lower", "black white purple yellow blue green pink gray brown"),
    )
    for c in colours.split()
]

_PA100K_TAILS = [
    ("the person is a man", "the person is a woman"),
    ("the person is no more than 60 years old", "the person is older than 60 years old"),
    ("the person is a young or old one", "the person is of mid age, between 18 and 60 years old"),
    ("the person is older than 18", "the person is a baby or a teenager, younger than 18"),
]


def test_mals_prompts_exact():
    assert len(_MALS) == 27
    assert attribute_prompts.MALS_PROMPTS == tuple(p for pair in _MALS for p in pair)
    assert attribute_prompts.prompt_set("mals") is attribute_prompts.MALS_PROMPTS
    assert len(attribute_prompts.MALS_ATTRIBUTES) == 27


def test_pa100k_prompts_exact_including_reference_slips():
    prompts = attribute_prompts.prompt_set("pa100k")
    assert len(prompts) == 52 and len(attribute_prompts.PA100K_ATTRIBUTES) == 26
    assert prompts[:8] == tuple(p for pair in _PA100K_TAILS for p in pair)
    for side, i in (("front", 4), ("side", 5), ("back", 6)):
        assert prompts[2 * i] == f"the picture is not the {side} of the person"
        assert prompts[2 * i + 1] == f"the picture shows the {side} of the person"
    assert prompts[16:18] == ("a person without a glasses", "a person with a glasses")
    assert prompts[24:26] == (
        "the person does not hold an object in front",
        "the person hold an object in front",
    )
    assert attribute_prompts.PA100K_ATTRIBUTES[19] == "LowerStripe"
    assert prompts[38:40] == (
        "there is no stripe on the upper clothes of the person",
        "there is stripe on the upper clothes of the person",
    )
    assert prompts[-2:] == ("the person does not wear boots", "the person wears boots")
    with pytest.raises(ValueError, match="unknown"):
        attribute_prompts.prompt_set("peta")


def test_label_to_prompt_mapping_readme_example():
    labels = np.full((1, 27), -1)
    labels[0, :2] = [1, 0]  # "a young boy ..."
    index = attribute_prompts.correct_prompt_index(labels)
    prompts = attribute_prompts.MALS_PROMPTS
    assert prompts[index[0, 0]] == "the person is a man"
    assert prompts[index[0, 1]] == "the person is younger than 18 years old"
    assert np.all(index[0, 2:] == -1)


def test_prompt_targets_numpy_and_jax():
    labels = np.array([[0, 1, -1], [1, -1, 0]])
    want = np.array([[1, 0, 0, 1, -1, -1], [0, 1, -1, -1, 1, 0]])
    np.testing.assert_array_equal(attribute_prompts.prompt_targets(labels), want)
    np.testing.assert_array_equal(attribute_prompts.prompt_targets(jnp.asarray(labels)), want)


def test_market_to_mals_labels_agree_with_the_synthetic_generator():
    """Two derivations of the MALS labels of one person: from its Market-1501 codes (file 1/2
    coding -> 0/1 record coding -> mapping) and straight from the person (synthetic data)."""
    from reid_jax.data.formats import attributes
    from reid_jax.data.synthetic import attributes as synthetic

    rng = np.random.default_rng(3)
    people = [synthetic.sample_identity(rng) for _ in range(400)]
    columns = attributes.MARKET_ATTRIBUTE_NAMES  # the reader's order; file code - 1 = record
    market = np.array([[synthetic.market_codes(p)[c] - 1 for c in columns] for p in people])
    want = np.array([list(synthetic.mals_values(p).values()) for p in people])
    np.testing.assert_array_equal(attribute_prompts.market_to_mals_labels(market), want)
    assert len({tuple(r) for r in want}) > 100  # the sample exercises many combinations


def test_market_to_mals_labels_keeps_unknowns_and_checks_the_width():
    values = np.full((2, 27), -1)
    values[0, 0] = 1  # female
    values[0, 9] = 1  # teenager: younger than 18
    values[1, 9] = 2  # adult: older than 18
    labels = attribute_prompts.market_to_mals_labels(values)
    assert labels[0, 0] == 0 and labels[0, 1] == 0 and labels[1, 1] == 1
    assert (labels[0, 2:] == -1).all() and labels[1, 0] == -1
    with pytest.raises(ValueError, match="expected"):
        attribute_prompts.market_to_mals_labels(np.zeros((2, 26)))
