"""Caption grammar: varied English descriptions of what one picture shows.

Like real annotators, a caption picks some of the visible facts (never an invisible one: no
backpack from the front), words them with synonyms, in varying order, with optional filler
and the occasional typo in a filler word. The builder records which attribute groups it
mentioned, from which the MALS label vector (aptm §1.1, §2.1) follows exactly.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from reid_jax.data.synthetic.attributes import ATTRIBUTE_NAMES, Identity, mals_values
from reid_jax.data.synthetic.scene import Scene

# Attribute groups a caption can mention. 'upcolour'/'downcolour' stand for all 8 / 9 colour
# flags at once: naming the colour of a garment settles every flag of that garment.
GROUPS: tuple[str, ...] = (
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
    "upcolour",
    "downcolour",
)

_SUBJECTS = {  # (female, age) -> nouns; ages 0/1 always name the age (younger than 18)
    (False, 0): ("little boy", "young boy", "boy", "kid", "child"),
    (False, 1): ("teenage boy", "teen boy", "boy", "teenager", "young boy"),
    (False, 2): ("man", "man", "guy", "male", "gentleman", "middle-aged man", "adult man"),
    (False, 3): ("old man", "elderly man", "older man", "senior man", "old gentleman"),
    (True, 0): ("little girl", "young girl", "girl", "kid", "child"),
    (True, 1): ("teenage girl", "teen girl", "girl", "teenager", "young girl"),
    (True, 2): ("woman", "woman", "lady", "female", "middle-aged woman", "adult woman"),
    (True, 3): ("old woman", "elderly woman", "older lady", "old lady", "senior woman"),
}
_NEUTRAL = ("person", "pedestrian", "individual")
_GENDERED = {"boy", "girl", "man", "woman", "guy", "lady", "male", "female", "gentleman"}
_AGE_WORDS = {
    "little",
    "young",
    "boy",
    "girl",
    "kid",
    "child",
    "teenage",
    "teen",
    "teenager",
    "middle-aged",
    "adult",
    "old",
    "elderly",
    "older",
    "senior",
}
_FILLER_TYPO_WORDS = (
    "wearing",
    "walking",
    "camera",
    "street",
    "sidewalk",
    "standing",
    "appears",
    "holding",
    "seems",
    "looking",
)


@dataclasses.dataclass(frozen=True)
class Caption:
    """One sentence and the attribute groups it mentions.

    Attributes:
      text: the caption.
      mentioned: subset of GROUPS.
    """

    text: str
    mentioned: frozenset[str]


class _Words:
    """Pronouns for one caption: gendered if the subject noun is, else 'the <noun>'."""

    def __init__(self, noun: str, female: bool):
        gendered = noun.split()[-1] in _GENDERED
        self.subj = ("she" if female else "he") if gendered else f"the {noun.split()[-1]}"
        self.poss = ("her" if female else "his") if gendered else "their"
        self.gendered = gendered


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _colour_words(rng, colour: str, shade: str) -> str:
    word = _pick(rng, ("gray", "grey")) if colour == "gray" else colour
    if shade == "light" and rng.random() < 0.8:
        return f"{_pick(rng, ('light', 'pale'))} {word}"
    if shade == "dark" and rng.random() < 0.8:
        return f"dark {word}"
    if shade == "normal" and colour in ("red", "yellow", "green", "blue") and rng.random() < 0.1:
        return f"bright {word}"
    return word


def _upper(rng, ident: Identity, scene: Scene, said: set[str]) -> str:
    if ident.short_sleeve:
        nouns = [
            ("t-shirt", True),
            ("shirt", False),
            ("top", False),
            ("tee shirt", True),
            ("polo shirt", True),
        ]
    else:
        nouns = [
            ("jacket", True),
            ("sweater", True),
            ("hoodie", True),
            ("coat", True),
            ("shirt", False),
            ("top", False),
        ]
    if ident.female:
        nouns.append(("blouse", False))
    noun, implies_sleeve = _pick(rng, nouns)
    words = []
    if rng.random() < 0.96:
        words.append(_colour_words(rng, ident.upper_colour, ident.upper_shade))
        said.add("upcolour")
    if ident.stripes and rng.random() < 0.6:
        words.append("striped")
    if rng.random() < (0.12 if implies_sleeve else 0.45):
        words.append(
            _pick(rng, ("short sleeved", "short-sleeved", "short sleeve"))
            if ident.short_sleeve
            else _pick(rng, ("long sleeved", "long-sleeved", "long sleeve"))
        )
        implies_sleeve = True
    if implies_sleeve:
        said.add("up")
    phrase = _article(" ".join([*words, noun]))
    if scene.visible.logo and rng.random() < 0.5:
        phrase += " with a logo on the front"
    elif ident.stripes and "striped" not in words and rng.random() < 0.4:
        phrase += " with stripes"
    return phrase


def _lower(rng, ident: Identity, said: set[str]) -> str:
    colour = ""
    if rng.random() < 0.93:
        colour = _colour_words(rng, ident.lower_colour, ident.lower_shade) + " "
        said.add("downcolour")
    said.add("clothes")
    if ident.skirt:
        if rng.random() < 0.7:
            said.add("down")
            length = (
                _pick(rng, ("short", "mini", "knee-length"))
                if ident.short_lower
                else _pick(rng, ("long", "ankle-length", "maxi"))
            )
            return _article(
                f"{length} {colour}skirt" if rng.random() < 0.5 else f"{colour}{length} skirt"
            )
        return _article(f"{colour}skirt")
    said.add("down")
    if ident.short_lower:
        return f"{colour}{_pick(rng, ('shorts', 'shorts', 'short pants', 'knee-length shorts'))}"
    noun = _pick(rng, ("pants", "pants", "trousers", "slacks", "jeans"))
    return f"{'long ' if rng.random() < 0.1 else ''}{colour}{noun}"


def _hair(rng, ident: Identity, said: set[str]) -> str:
    colour = ident.hair_colour if rng.random() < 0.6 else ""
    if rng.random() < 0.8:
        said.add("hair")
        length = "long" if ident.long_hair else _pick(rng, ("short", "short", "cropped"))
        if ident.long_hair and rng.random() < 0.15:
            return f"{colour} hair in a ponytail".strip()
        return " ".join(w for w in (length, colour, "hair") if w)
    # No length word: the hair group stays unmentioned (e.g. 'dark hair', 'blonde hair').
    vague = {"black": "dark", "brown": "dark", "blonde": "blonde", "gray": "gray", "white": "white"}
    return f"{colour or vague[ident.hair_colour]} hair"


def _accessories(rng, ident: Identity, scene: Scene, words: _Words, said: set[str]):
    """Phrases for visible carried items, or a statement that nothing is carried."""
    out = []
    colour = lambda name: _colour_words(rng, name, "normal") + " " if rng.random() < 0.7 else ""
    if scene.visible.backpack and rng.random() < 0.85:
        said.add("backpack")
        out.append(
            _article(
                f"{colour(ident.backpack_colour)}{_pick(rng, ('backpack', 'backpack', 'rucksack'))}"
            )
        )
    if scene.visible.bag and rng.random() < 0.75:
        said.add("bag")
        kind = _pick(rng, ("shoulder bag", "messenger bag", "crossbody bag"))
        out.append(
            _article(f"{colour(ident.bag_colour)}{kind}")
            if rng.random() < 0.7
            else _article(f"{colour(ident.bag_colour)}bag over {words.poss} shoulder")
        )
    if scene.visible.handbag and rng.random() < 0.8:
        said.add("handbag")
        out.append(
            _article(f"{colour(ident.handbag_colour)}{_pick(rng, ('handbag', 'handbag', 'purse'))}")
        )
    if not (ident.backpack or ident.bag or ident.handbag) and rng.random() < 0.12:
        said.update(("backpack", "bag", "handbag"))
        return None
    return out


def _join(items: list[str], rng) -> str:
    if len(items) <= 1:
        return "".join(items)
    oxford = rng.random() >= 0.85  # drawn for every list, so the stream does not depend on it
    last = ", and " if oxford and len(items) > 2 else " and "
    return ", ".join(items[:-1]) + last + items[-1]


def _filler(rng, scene: Scene) -> str:
    by_view = {
        "front": ("facing the camera", "walking towards the camera", "looking ahead"),
        "back": ("walking away from the camera", "facing away from the camera"),
        "side": (
            "walking to the left" if scene.mirror else "walking to the right",
            "walking sideways",
            "crossing the street",
        ),
    }
    common = (
        "walking down the street",
        "walking on the sidewalk",
        "standing still",
        "in a hurry",
        "looking down",
    )
    return _pick(rng, by_view[scene.view] if rng.random() < 0.5 else common)


def _typo(rng, text: str) -> str:
    candidates = [w for w in _FILLER_TYPO_WORDS if re.search(rf"\b{w}\b", text)]
    if not candidates:
        return text
    word = _pick(rng, candidates)
    i = int(rng.integers(1, len(word) - 1))
    bad = (
        word[:i] + word[i + 1 :]
        if rng.random() < 0.5
        else (word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :])
    )
    return re.sub(rf"\b{word}\b", bad, text, count=1)


def make_caption(
    ident: Identity, scene: Scene, rng: np.random.Generator, *, style: str = "annotator"
) -> Caption:
    """Describes one picture of one person.

    Args:
      ident: the person.
      scene: the picture (view and visibility decide what may be said).
      rng: generator owned by this caption.
      style: 'annotator' (CUHK-PEDES-like, several sentences) or 'blip' (MALS-like, one
        lower-case sentence without final period).

    Returns:
      Caption with the text and the mentioned attribute groups.
    """
    if style not in ("annotator", "blip"):
        raise ValueError(f"style: expected 'annotator' or 'blip', got {style!r}")
    said: set[str] = set()
    noun = (
        _pick(rng, _NEUTRAL)
        if rng.random() < 0.07
        else _pick(rng, _SUBJECTS[(ident.female, ident.age)])
    )
    words = _Words(noun, ident.female)
    if words.gendered:
        said.add("gender")
    if _AGE_WORDS & set(noun.split()):
        said.add("age")
    wear = [_upper(rng, ident, scene, said), _lower(rng, ident, said)]
    if rng.random() < 0.15:
        wear.reverse()
    if scene.visible.shoes and rng.random() < 0.5:
        shoe = _colour_words(rng, ident.shoe_colour, "normal") + " " if rng.random() < 0.9 else ""
        wear.append(f"{shoe}{_pick(rng, ('shoes', 'shoes', 'sneakers', 'boots', 'trainers'))}")
    hat = None
    if scene.visible.hat and rng.random() < 0.8:
        said.add("hat")
        hat = _article(
            f"{_colour_words(rng, ident.hat_colour, 'normal')} "
            f"{_pick(rng, ('hat', 'cap', 'baseball cap', 'beanie'))}"
        )
        if rng.random() < 0.5:
            wear.insert(int(rng.integers(1, len(wear) + 1)), hat)
            hat = None
    elif not ident.hat and style == "annotator" and rng.random() < 0.04:
        said.add("hat")
        hat = "no hat"
    hair = _hair(rng, ident, said) if rng.random() < (0.7 if ident.long_hair else 0.4) else None
    carry = _accessories(rng, ident, scene, words, said)
    if style == "blip":
        text = _blip(rng, noun, wear, carry, hair, hat, scene)
    else:
        text = _annotator(rng, noun, words, wear, carry, hair, hat, scene)
    if rng.random() < 0.05:
        text = _typo(rng, text)
    return Caption(text=text, mentioned=frozenset(said))


def _blip(rng, noun, wear, carry, hair, hat, scene) -> str:
    head = _pick(rng, ("", "", "there is ", "an image of "))
    parts = [f"{head}{_article(noun)}"]
    if hair is not None and rng.random() < 0.5:
        parts.append(f"with {hair}")
        hair = None
    parts.append(f"{_pick(rng, ('in', 'wearing', 'dressed in'))} {_join(wear, rng)}")
    extras = [x for x in (hat, hair) if x]
    if carry:
        parts.append(f"{_pick(rng, ('carrying', 'with'))} {_join(carry, rng)}")
    elif carry is None:
        parts.append("carrying nothing")
    if extras:
        parts.append(f"with {_join(extras, rng)}")
    if rng.random() < 0.5:
        parts.append(_filler(rng, scene))
    return " ".join(parts)


def _annotator(rng, noun, words: _Words, wear, carry, hair, hat, scene) -> str:
    pron = words.subj
    det = _pick(rng, ("a", "a", "the", "this"))
    subject = f"{det} {noun}" if det != "a" else _article(noun)
    lead = subject
    if hair is not None and rng.random() < 0.35:
        lead += f" with {hair}"
        hair = None
    verb = _pick(rng, ("is wearing", "wearing", "wears", "is dressed in", "in", "has on"))
    first = f"{lead} {verb} {_join(wear, rng)}"
    if rng.random() < 0.25:
        first += f", {_filler(rng, scene)}" if verb != "wearing" else f" {_filler(rng, scene)}"
    sentences = [first]
    rest = []
    if carry:
        verbs = ("is carrying", "carries", "has")
        if len(carry) == 1 and carry[0].endswith(("handbag", "purse")):
            verbs += ("is holding",)
        rest.append(f"{pron} {_pick(rng, verbs)} {_join(carry, rng)}")
    elif carry is None:
        nothing = _pick(rng, ("is not carrying anything", "carries nothing", "has no bags"))
        rest.append(f"{pron} {nothing}")
    if hair is not None:
        rest.append(f"{pron} has {hair}")
    if hat is not None:
        rest.append(f"{pron} has {hat}" if hat == "no hat" else f"{pron} is wearing {hat}")
    order = rng.permutation(len(rest))
    sentences += [rest[i] for i in order]
    if rng.random() < 0.1:
        sentences.append(f"{pron} is {_filler(rng, scene)}")
    text = ". ".join(s[0].upper() + s[1:] for s in sentences)
    if rng.random() < 0.92:
        text += "."
    return text.lower() if rng.random() < 0.08 else text


_TOKEN = re.compile(r"'s\b|[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """CUHK-PEDES-style `processed_tokens`: lower-cased words, punctuation split off.

    Args:
      text: a caption.

    Returns:
      list of tokens, e.g. 'A man, in a t-shirt.' -> ['a', 'man', ',', 'in', 'a', 't-shirt', '.'].
    """
    return _TOKEN.findall(text.lower())


def mals_label(ident: Identity, mentioned: frozenset[str]) -> list[int]:
    """MALS `label` vector: the identity's value where the caption mentions it, else -1.

    Args:
      ident: the person.
      mentioned: Caption.mentioned.

    Returns:
      27 ints in {1, 0, -1}, in ATTRIBUTE_NAMES order (aptm §2.2).
    """
    values = mals_values(ident)
    label = []
    for name in ATTRIBUTE_NAMES:
        group = name
        if name.startswith("up") and name != "up":
            group = "upcolour"
        elif name.startswith("down") and name != "down":
            group = "downcolour"
        label.append(values[name] if group in mentioned else -1)
    return label
