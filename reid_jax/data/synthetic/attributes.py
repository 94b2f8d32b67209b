"""Identity sampling for the synthetic dataset: Market-1501 attributes plus private detail.

An identity carries the 27 Market-1501 attributes (alignedreid §1.4, attribute_reid §2.1) and
identity-specific detail that no attribute names (colour shade, stripes, shoe and hair colour,
skin tone, body proportions), so that two people with equal attribute vectors still differ.
Everything is drawn from a caller-supplied `numpy.random.Generator`; nothing here is global.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# MALS / APTM label order (aptm §2.2). Names reuse the Market field names; note that in MALS
# `age` is binary (older than 18) and the label polarity is "label 0 first" (aptm §2.1).
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "gender",
    "age",
    "hair",
    "hat",
    "backpack",
    "handbag",
    "bag",
    "up",
    "down",
    "clothes",
    "upblack",
    "upwhite",
    "upred",
    "uppurple",
    "upyellow",
    "upblue",
    "upgreen",
    "upgray",
    "downblack",
    "downwhite",
    "downpurple",
    "downyellow",
    "downblue",
    "downgreen",
    "downpink",
    "downgray",
    "downbrown",
)

UPPER_COLOURS: tuple[str, ...] = (
    "black",
    "white",
    "red",
    "purple",
    "yellow",
    "gray",
    "blue",
    "green",
)
LOWER_COLOURS: tuple[str, ...] = (
    "black",
    "white",
    "pink",
    "purple",
    "yellow",
    "gray",
    "blue",
    "green",
    "brown",
)
# Colours outside the Market flags: such identities have every colour flag "no" (as 78/751
# Market training ids do for the upper body, alignedreid §1.4).
UPPER_OTHER_COLOURS: tuple[str, ...] = ("orange", "pink", "brown")
LOWER_OTHER_COLOURS: tuple[str, ...] = ("red", "orange")

# The 27 Market fields in the canonical order of the spec table (alignedreid §1.4).
MARKET_ATTRIBUTE_NAMES: tuple[str, ...] = (
    ("gender", "hair", "up", "down", "clothes", "hat", "backpack", "bag", "handbag", "age")
    + tuple("up" + c for c in UPPER_COLOURS)
    + tuple("down" + c for c in LOWER_COLOURS)
)

AGE_CLASSES: tuple[str, ...] = ("young", "teenager", "adult", "old")

# Base RGB of every colour name used for clothes and accessories. Chosen far apart so that the
# per-camera colour shift (render.py) never moves one named colour onto another.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (236, 236, 230),
    "red": (205, 28, 36),
    "purple": (122, 48, 160),
    "yellow": (240, 210, 36),
    "gray": (128, 128, 130),
    "blue": (36, 72, 200),
    "green": (34, 142, 58),
    "pink": (240, 120, 180),
    "brown": (120, 72, 36),
    "orange": (235, 105, 20),
}
# Shades an annotator could name without changing the colour word; the others are left out
# because they drift onto a neighbour ('light purple' ~ pink, 'dark brown' ~ black, ...).
SHADES: dict[str, tuple[str, ...]] = {
    "black": ("normal",),
    "white": ("normal",),
    "red": ("normal", "dark"),
    "purple": ("normal", "dark"),
    "yellow": ("light", "normal"),
    "gray": ("normal", "dark"),
    "blue": ("light", "normal", "dark"),
    "green": ("light", "normal", "dark"),
    "pink": ("normal",),
    "brown": ("normal",),
    "orange": ("normal",),
}
SHOE_COLOURS: tuple[str, ...] = ("black", "white", "brown", "gray", "red", "blue")
HAIR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (22, 18, 16),
    "brown": (92, 58, 30),
    "blonde": (214, 176, 96),
    "gray": (150, 150, 150),
    "white": (222, 222, 216),
}
SKIN_LIGHT = np.array([236.0, 196.0, 164.0])
SKIN_DARK = np.array([96.0, 60.0, 38.0])


@dataclasses.dataclass(frozen=True)
class Identity:
    """One synthetic person: Market attributes, then detail that the attributes do not name.

    Attributes:
      female: gender (Market `gender` 2 = female).
      age: index into AGE_CLASSES (Market `age` = age + 1).
      long_hair, short_sleeve, short_lower, skirt: Market `hair`, `up`, `down`, `clothes`
        (skirt True = dress/skirt, i.e. Market `clothes` = 1).
      hat, backpack, bag, handbag: carried / worn items.
      upper_colour, lower_colour: colour names (Market flag colours or *_OTHER_COLOURS).
      upper_shade, lower_shade: 'light', 'normal' or 'dark'.
      upper_rgb, lower_rgb: [3] float RGB actually drawn (shade and private jitter applied).
      stripes: striped top (stripe_rgb colour); logo: small chest print (front view only).
      shoe_colour, hair_colour, hat_colour, backpack_colour, bag_colour, handbag_colour: names.
      skin_rgb: [3] float RGB.
      height, width: body proportions in [0, 1] (fraction of the frame) and a width factor.
      handbag_right, bag_right: which side the handbag / shoulder bag hangs on (front view).
    """

    female: bool
    age: int
    long_hair: bool
    short_sleeve: bool
    short_lower: bool
    skirt: bool
    hat: bool
    backpack: bool
    bag: bool
    handbag: bool
    upper_colour: str
    lower_colour: str
    upper_shade: str
    lower_shade: str
    upper_rgb: tuple[float, float, float]
    lower_rgb: tuple[float, float, float]
    stripes: bool
    stripe_rgb: tuple[float, float, float]
    logo: bool
    shoe_colour: str
    hair_colour: str
    hat_colour: str
    backpack_colour: str
    bag_colour: str
    handbag_colour: str
    skin_rgb: tuple[float, float, float]
    height: float
    width: float
    handbag_right: bool
    bag_right: bool


def _choice(rng: np.random.Generator, options, weights=None):
    weights = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    return options[int(rng.choice(len(options), p=weights))]


def shaded_rgb(colour: str, shade: str, jitter: np.ndarray) -> tuple[float, float, float]:
    """RGB of a named colour after its shade and a small private jitter.

    Args:
      colour: key of COLOUR_RGB.
      shade: 'light' (mix 30 % white), 'dark' (scale 0.65) or 'normal'.
      jitter: [3] additive offsets (a few units) that make the tone identity-specific.

    Returns:
      (r, g, b) floats in [0, 255].
    """
    rgb = np.asarray(COLOUR_RGB[colour], float)
    if shade == "light":
        rgb = 0.7 * rgb + 0.3 * 255.0
    elif shade == "dark":
        rgb = 0.65 * rgb
    return tuple(float(v) for v in np.clip(rgb + jitter, 0, 255))


def _colour_and_shade(
    rng: np.random.Generator, flags: tuple[str, ...], others: tuple[str, ...], other_p: float
) -> tuple[str, str]:
    colour = _choice(rng, others) if rng.random() < other_p else _choice(rng, flags)
    shades = SHADES[colour]
    weights = [0.6 if s == "normal" else 0.2 for s in shades]
    return colour, _choice(rng, shades, weights)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws one person with correlated attributes (long hair and skirts mostly female, ...).

    Args:
      rng: generator owned by this identity (seeded by (seed, dataset, identity index)).

    Returns:
      An Identity.
    """
    female = bool(rng.random() < 0.45)
    age = int(rng.choice(4, p=(0.06, 0.14, 0.68, 0.12)))
    long_hair = bool(rng.random() < (0.75 if female else 0.08))
    skirt = bool(female and rng.random() < 0.35)
    short_lower = bool(rng.random() < (0.45 if skirt else 0.25))
    short_sleeve = bool(rng.random() < 0.5)
    upper_colour, upper_shade = _colour_and_shade(rng, UPPER_COLOURS, UPPER_OTHER_COLOURS, 0.08)
    lower_colour, lower_shade = _colour_and_shade(rng, LOWER_COLOURS, LOWER_OTHER_COLOURS, 0.05)
    stripes = bool(rng.random() < 0.25)
    upper_rgb = shaded_rgb(upper_colour, upper_shade, rng.normal(0, 6, 3))
    lower_rgb = shaded_rgb(lower_colour, lower_shade, rng.normal(0, 6, 3))
    # Stripes contrast with the shirt: dark stripes on light tops, light ones on dark tops.
    lum = float(np.dot(upper_rgb, (0.3, 0.59, 0.11)))
    stripe_rgb = tuple(
        float(v)
        for v in (
            np.asarray(upper_rgb) * 0.45 if lum > 110 else 0.5 * np.asarray(upper_rgb) + 0.5 * 235.0
        )
    )
    if age == 3:
        hair_colour = _choice(rng, ("gray", "white", "black"), (0.5, 0.3, 0.2))
    else:
        hair_colour = _choice(rng, ("black", "brown", "blonde"), (0.55, 0.3, 0.15))
    tone = float(rng.beta(2.0, 2.5))
    skin = (1 - tone) * SKIN_LIGHT + tone * SKIN_DARK
    accessory = tuple(COLOUR_RGB)
    return Identity(
        female=female,
        age=age,
        long_hair=long_hair,
        short_sleeve=short_sleeve,
        short_lower=short_lower,
        skirt=skirt,
        hat=bool(rng.random() < 0.15),
        backpack=bool(rng.random() < 0.3),
        bag=bool(rng.random() < 0.22),
        handbag=bool(rng.random() < (0.25 if female else 0.06)),
        upper_colour=upper_colour,
        lower_colour=lower_colour,
        upper_shade=upper_shade,
        lower_shade=lower_shade,
        upper_rgb=upper_rgb,
        lower_rgb=lower_rgb,
        stripes=stripes,
        stripe_rgb=stripe_rgb,
        logo=bool(not stripes and rng.random() < 0.2),
        shoe_colour=_choice(rng, SHOE_COLOURS, (0.35, 0.25, 0.15, 0.1, 0.07, 0.08)),
        hair_colour=hair_colour,
        hat_colour=_choice(rng, accessory),
        backpack_colour=_choice(rng, accessory),
        bag_colour=_choice(rng, accessory),
        handbag_colour=_choice(rng, accessory),
        skin_rgb=tuple(float(v) for v in skin + rng.normal(0, 4, 3)),
        height=float(rng.uniform(0.0, 1.0)),
        width=float(rng.uniform(0.85, 1.2)),
        handbag_right=bool(rng.random() < 0.5),
        bag_right=bool(rng.random() < 0.5),
    )


def market_codes(identity: Identity) -> dict[str, int]:
    """The 27 Market-1501 fields of an identity in the file's 1/2 coding (age 1..4).

    Args:
      identity: the person.

    Returns:
      dict field name -> code, keys in MARKET_ATTRIBUTE_NAMES order.
    """
    two = lambda flag: 2 if flag else 1
    codes = {
        "gender": two(identity.female),
        "hair": two(identity.long_hair),
        "up": two(identity.short_sleeve),
        "down": two(identity.short_lower),
        "clothes": 1 if identity.skirt else 2,
        "hat": two(identity.hat),
        "backpack": two(identity.backpack),
        "bag": two(identity.bag),
        "handbag": two(identity.handbag),
        "age": identity.age + 1,
    }
    for c in UPPER_COLOURS:
        codes["up" + c] = two(identity.upper_colour == c)
    for c in LOWER_COLOURS:
        codes["down" + c] = two(identity.lower_colour == c)
    return codes


def mals_values(identity: Identity) -> dict[str, int]:
    """The 27 MALS labels of an identity as if every attribute were mentioned (aptm §2.1).

    Polarity follows the prompt pairs: 1 = man / older than 18 / long hair / WITHOUT hat,
    backpack, handbag, bag / short sleeve / short lower / pants or shorts / does NOT wear the
    colour.

    Args:
      identity: the person.

    Returns:
      dict ATTRIBUTE_NAMES -> 0 or 1, in ATTRIBUTE_NAMES order.
    """
    values = {
        "gender": int(not identity.female),
        "age": int(identity.age >= 2),
        "hair": int(identity.long_hair),
        "hat": int(not identity.hat),
        "backpack": int(not identity.backpack),
        "handbag": int(not identity.handbag),
        "bag": int(not identity.bag),
        "up": int(identity.short_sleeve),
        "down": int(identity.short_lower),
        "clothes": int(not identity.skirt),
    }
    for name in ATTRIBUTE_NAMES[10:]:
        part, colour = ("up", name[2:]) if name.startswith("up") else ("down", name[4:])
        worn = identity.upper_colour if part == "up" else identity.lower_colour
        values[name] = int(worn != colour)
    return {name: values[name] for name in ATTRIBUTE_NAMES}
