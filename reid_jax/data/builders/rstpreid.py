"""TFDS builder for RSTPReid (`data_captions.json` + `imgs/`), manual download, ArrayRecord output.

Usage as in `reid_jax.data.builders.cuhk_pedes`, with name 'rstpreid'. Splits 'train' / 'val' /
'test'. The file has no pre-tokenised captions, so the `tokens` feature is empty for every
example (tokenise with `reid_jax.text.cleaning.tokenize_caption`). Features: see
`reid_jax.data.builders.captioned_images`.
"""

from __future__ import annotations

from reid_jax.data.builders.captioned_images import CaptionedImageBuilder
from reid_jax.data.formats.rstpreid import load_rstpreid
from reid_jax.data.records import CaptionedImage


class Rstpreid(CaptionedImageBuilder):
    """RSTPReid: 20,505 images of 4,101 persons, two captions each."""

    name = "rstpreid"
    SPLITS = ("train", "val", "test")
    DESCRIPTION = "RSTPReid text-based person search dataset (one example per image)."
    HOMEPAGE = "https://github.com/NjtechCVLab/RSTPReid-Dataset"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download RSTPReid and point manual_dir at the folder holding `data_captions.json` "
        "and `imgs/`."
    )

    def load_records(self, root: str) -> list[CaptionedImage]:
        """Parses `root/data_captions.json` (see `reid_jax.data.formats.rstpreid`)."""
        return load_rstpreid(root)
