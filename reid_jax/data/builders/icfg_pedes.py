"""TFDS builder for ICFG-PEDES (`ICFG-PEDES.json` + `imgs/`), manual download, ArrayRecord output.

Usage as in `reid_jax.data.builders.cuhk_pedes`, with name 'icfg_pedes'. Splits 'train' /
'test' from the `split` field only (the `imgs/train`, `imgs/test` folders are inherited from
MSMT17 and do not define it, ssan §1.1); identities 0-based as stored. Features: see
`reid_jax.data.builders.captioned_images`.
"""

from __future__ import annotations

from reid_jax.data.builders.captioned_images import CaptionedImageBuilder
from reid_jax.data.formats.icfg_pedes import load_icfg_pedes
from reid_jax.data.records import CaptionedImage


class IcfgPedes(CaptionedImageBuilder):
    """ICFG-PEDES: 54,522 images of 4,102 persons, one caption each."""

    SPLITS = ("train", "test")
    DESCRIPTION = "ICFG-PEDES text-based person search dataset (one example per image)."
    HOMEPAGE = "https://github.com/zifyloo/SSAN"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Request ICFG-PEDES from the SSAN authors and point manual_dir at the folder holding "
        "`ICFG-PEDES.json` (or `ICFG_PEDES.json`) and `imgs/`."
    )

    def load_records(self, root: str) -> list[CaptionedImage]:
        """Parses the ICFG annotation JSON (see `reid_jax.data.formats.icfg_pedes`)."""
        return load_icfg_pedes(root)
