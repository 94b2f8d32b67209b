"""TFDS builder for CUHK-PEDES (`reid_raw.json` + `imgs/`), manual download, ArrayRecord output.

Usage (no TensorFlow needed)::

    builder = CuhkPedes(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/data/CUHK-PEDES"))
    source = tfds.data_source("cuhk_pedes", data_dir=data_dir, split="train")

Splits 'train' / 'val' / 'test' come from the `split` field (ssan §1.1); identities are kept
1-based as stored (the SSAN relabelling is a later, explicit step). Features: see
`reid_jax.data.builders.captioned_images`.
"""

from __future__ import annotations

from reid_jax.data.builders.captioned_images import CaptionedImageBuilder
from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes
from reid_jax.data.records import CaptionedImage


class CuhkPedes(CaptionedImageBuilder):
    """CUHK-PEDES: 40,206 images of 13,003 persons, about two captions each."""

    SPLITS = ("train", "val", "test")
    DESCRIPTION = "CUHK-PEDES text-based person search dataset (one example per image)."
    HOMEPAGE = "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Request CUHK-PEDES from its authors and point manual_dir at the folder holding "
        "`reid_raw.json` (with `split` and `processed_tokens`) and `imgs/`."
    )

    def load_records(self, root: str) -> list[CaptionedImage]:
        """Parses `root/reid_raw.json` (see `reid_jax.data.formats.cuhk_pedes`)."""
        return load_cuhk_pedes(root)
