"""Attribute prompt sets of APTM (MALS, PA-100K) and the label -> prompt mapping.

Facts: aptm §2.1 (prompt ``2i + y_i`` is the correct one for attribute ``i``, ``y_i = -1`` is
unknown), §2.2 (the 54 MALS prompts, label 0 first, not "present first") and §2.3 (the 52
PA-100K prompts, absent first; the reference's grammatical slips, including the LowerStripe
prompt that says "upper clothes", are kept because the released checkpoints used them).
Plain Python/NumPy; the strings are tokenised once per run (padded to the longest prompt).
"""

from __future__ import annotations

import numpy as np

from reid_jax.data.formats.attributes import MARKET_ATTRIBUTE_NAMES
from reid_jax.data.formats.pa100k import PA100K_ATTRIBUTE_NAMES

_MALS_COLOURED = [
    ("upper", colour)
    for colour in ("black", "white", "red", "purple", "yellow", "blue", "green", "gray")
] + [
    ("lower", colour)
    for colour in ("black", "white", "purple", "yellow", "blue", "green", "pink", "gray", "brown")
]


def _mals_pairs() -> list[tuple[str, str]]:
    pairs = [
        ("the person is a woman", "the person is a man"),
        ("the person is younger than 18 years old", "the person is older than 18 years old"),
        ("the person with short hair", "the person with long hair"),
    ]
    pairs += [
        (f"the person with a {item}", f"the person without a {item}")
        for item in ("hat", "backpack", "handbag", "bag")
    ]
    pairs += [
        (
            "the person wears long sleeved upper clothes",
            "the person wears short sleeved upper clothes",
        ),
        (
            "the person wears long dress or long pants",
            "the person wears short dress or short pants",
        ),
        ("the person wears dress or skirt", "the person wears pants or shorts"),
    ]
    pairs += [
        (
            f"the person wears {colour} {part} clothes",
            f"the person does not wear {colour} {part} clothes",
        )
        for part, colour in _MALS_COLOURED
    ]
    return pairs


_PA100K_PAIRS = [
    ("the person is a man", "the person is a woman"),
    ("the person is no more than 60 years old", "the person is older than 60 years old"),
    ("the person is a young or old one", "the person is of mid age, between 18 and 60 years old"),
    ("the person is older than 18", "the person is a baby or a teenager, younger than 18"),
    ("the picture is not the front of the person", "the picture shows the front of the person"),
    ("the picture is not the side of the person", "the picture shows the side of the person"),
    ("the picture is not the back of the person", "the picture shows the back of the person"),
    ("a person without a hat", "a person with a hat"),
    ("a person without a glasses", "a person with a glasses"),
    ("a person without a handbag", "a person with a handbag"),
    ("a person without a shoulder bag", "a person with a shoulder bag"),
    ("a person without a backpack", "a person with a backpack"),
    ("the person does not hold an object in front", "the person hold an object in front"),
    (
        "the person does not wear short sleeved upper clothes",
        "the person wears short sleeved upper clothes",
    ),
    (
        "the person does not wear long sleeved upper clothes",
        "the person wears long sleeved upper clothes",
    ),
    (
        "there is no stride on the upper clothes of the person",
        "there is stride on the upper clothes of the person",
    ),
    (
        "there is no logo on the upper clothes of the person",
        "there is logo on the upper clothes of the person",
    ),
    (
        "there is no plaid on the upper clothes of the person",
        "there is plaid on the upper clothes of the person",
    ),
    (
        "there is no splice on the upper clothes of the person",
        "there is splice on the upper clothes of the person",
    ),
    # aptm §2.3 row 19 (LowerStripe): "upper clothes" is the reference's slip, kept.
    (
        "there is no stripe on the upper clothes of the person",
        "there is stripe on the upper clothes of the person",
    ),
    (
        "there is no pattern on the lower part of the person",
        "there is pattern on the lower part of the person",
    ),
    ("the person does not wear long coat", "the person wears long coat"),
    ("the person does not wear trousers", "the person wears trousers"),
    ("the person does not wear shorts", "the person wears shorts"),
    ("the person does not wear a skirt or a dress", "the person wears a skirt or a dress"),
    ("the person does not wear boots", "the person wears boots"),
]

MALS_ATTRIBUTES: tuple[str, ...] = (
    "gender",
    "age",
    "hair length",
    "hat",
    "backpack",
    "handbag",
    "bag",
    "sleeve length",
    "lower-body length",
    "lower-body type",
) + tuple(f"{part} {colour}" for part, colour in _MALS_COLOURED)

# The 26 PA-100K attributes in annotation order (one list, kept by the PA-100K reader).
PA100K_ATTRIBUTES: tuple[str, ...] = PA100K_ATTRIBUTE_NAMES

# Flattened in pair order: prompt 2i is the label-0 prompt of attribute i, 2i + 1 the label-1.
MALS_PROMPTS: tuple[str, ...] = tuple(p for pair in _mals_pairs() for p in pair)
PA100K_PROMPTS: tuple[str, ...] = tuple(p for pair in _PA100K_PAIRS for p in pair)


def prompt_set(name: str) -> tuple[str, ...]:
    """The prompt strings of one attribute set, in the reference's order (aptm §2.2, §2.3).

    Args:
      name: ``"mals"`` (27 attributes, 54 prompts) or ``"pa100k"`` (26 attributes, 52 prompts).

    Returns:
      tuple of 2A prompt strings; index ``2i + y`` is the prompt for label ``y`` of attribute i.
    """
    sets = {"mals": MALS_PROMPTS, "pa100k": PA100K_PROMPTS}
    if name not in sets:
        raise ValueError(f"unknown attribute prompt set {name!r}; expected one of {sorted(sets)}")
    return sets[name]


def correct_prompt_index(attribute_labels: np.ndarray) -> np.ndarray:
    """Index of the prompt stating each known label (aptm §2.1): ``2i + y_i``, -1 where unknown.

    Args:
      attribute_labels: [B, K] int labels in {-1, 0, 1}.

    Returns:
      [B, K] int64 prompt indices in [0, 2K), or -1 where the label is -1.
    """
    labels = np.asarray(attribute_labels)
    index = 2 * np.arange(labels.shape[-1]) + labels
    return np.where(labels < 0, -1, index)


def prompt_targets(attribute_labels):
    """Per-prompt targets Y of aptm §2.1: ``Y[:, 2i] = 1 - y_i``, ``Y[:, 2i+1] = y_i``, -1 unknown.

    Works on NumPy and JAX arrays alike (used inside the jitted IAM/MAM losses).

    Args:
      attribute_labels: [B, K] int labels in {-1, 0, 1}.

    Returns:
      [B, 2K] int targets in {-1, 0, 1} (1: the image has the value the prompt states).
    """
    xp = np if isinstance(attribute_labels, np.ndarray) else _jnp()
    labels = attribute_labels
    pairs = xp.stack([1 - labels, labels], axis=-1)
    pairs = xp.where((labels < 0)[..., None], -1, pairs)
    return pairs.reshape(*labels.shape[:-1], 2 * labels.shape[-1])


# MALS attribute i (MALS_ATTRIBUTES order) <- Market-1501 column, and whether the label flips:
# MALS label 0 is woman / with hat... / wears the colour, Market 1 is female / yes / worn.
_MARKET_FOR_MALS: tuple[tuple[str, bool], ...] = (
    ("gender", True),
    ("age", False),  # handled apart: 4 classes -> older than 18
    ("hair", False),
    ("hat", True),
    ("backpack", True),
    ("handbag", True),
    ("bag", True),
    ("up", False),
    ("down", False),
    ("clothes", False),
) + tuple(
    (f"{'up' if part == 'upper' else 'down'}{colour}", True) for part, colour in _MALS_COLOURED
)


def market_to_mals_labels(market_values: np.ndarray) -> np.ndarray:
    """Market-1501 attribute vectors -> the 27 MALS labels APTM's prompts state (aptm §2.2).

    Market coding as `load_market_attributes` emits it (`MARKET_ATTRIBUTE_NAMES` order, 0/1,
    age 0..3 = young, teenager, adult, old; -1 unknown, e.g. from an attribute query). MALS
    polarity: 1 = man, older than 18 (adult or old), long hair, WITHOUT hat / backpack /
    handbag / bag, short sleeve, short lower body, pants or shorts, does NOT wear the colour.
    Unknown stays -1.

    Args:
      market_values: [..., 27] int.

    Returns:
      [..., 27] int32 labels in {-1, 0, 1}, MALS attribute order.
    """
    values = np.asarray(market_values)
    if values.shape[-1] != len(MARKET_ATTRIBUTE_NAMES):
        raise ValueError(f"expected [..., 27] Market attributes, got shape {values.shape}")
    out = []
    for column, flip in _MARKET_FOR_MALS:
        v = values[..., MARKET_ATTRIBUTE_NAMES.index(column)]
        label = (v >= 2).astype(np.int32) if column == "age" else (1 - v if flip else v)
        out.append(np.where(v < 0, -1, label))
    return np.stack(out, axis=-1).astype(np.int32)


def _jnp():
    import jax.numpy as jnp

    return jnp
