"""Plain records produced by the dataset parsers (`reid_jax.data.formats`).

Parsers turn real annotation files into lists of these frozen dataclasses; everything
downstream (TFDS builders, grain sources, evaluation protocols) consumes only these.
No JAX, no TensorFlow. Paths are absolute (parsers join them to the dataset root).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CaptionedImage:
    """One image with its captions (CUHK-PEDES, ICFG-PEDES, RSTPReid, APTM fine-tune files).

    Attributes:
      image_path: absolute path of the image file.
      person_id: identity exactly as stored in the file (CUHK-PEDES 1-based, ICFG 0-based);
        relabelling for training is a separate, explicit step.
      captions: raw sentences of this image (>= 1).
      tokens: one pre-tokenised, lower-cased word list per caption where the file carries
        them (`processed_tokens`), else None.
      split: 'train', 'val' or 'test'.
    """

    image_path: str
    person_id: int
    captions: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...] | None
    split: str


@dataclasses.dataclass(frozen=True)
class CameraImage:
    """One image of an image-to-image re-id dataset (Market-1501, Duke, CUHK03, MSMT17).

    Attributes:
      image_path: absolute path of the image file.
      person_id: identity as in the file name; Market-1501 uses 0 for distractors and -1 for
        junk images.
      camera_id: 0-based camera index (Market `c1` -> 0).
      split: 'train', 'query' or 'gallery'.
    """

    image_path: str
    person_id: int
    camera_id: int
    split: str


@dataclasses.dataclass(frozen=True)
class AttributeRecord:
    """Attribute labels of one identity or one image.

    Attributes:
      key: identity string (e.g. '0001' for Market/Duke) or image path (PA-100K, MALS).
      labels: one int per attribute, in the order of `names`. Binary attributes are 1 (yes) /
        0 (no) / -1 (unknown) after parsing; multi-valued ones (Market `age`) keep 0-based
        class indices.
      names: attribute names, same length as labels.
      split: 'train', 'val' or 'test'.
    """

    key: str
    labels: tuple[int, ...]
    names: tuple[str, ...]
    split: str


@dataclasses.dataclass(frozen=True)
class CaptionPair:
    """One image-caption pair of MALS or an APTM training file (one caption per element).

    Attributes:
      image_path: absolute path of the image file.
      caption: one sentence.
      image_id: the file's `image_id` string (MALS: unique per pair; APTM fine-tune: person id).
      label: 27 attribute labels in {1, 0, -1} (-1 = not mentioned), or None if absent.
    """

    image_path: str
    caption: str
    image_id: str
    label: tuple[int, ...] | None
