"""Writes the synthetic MALS copy: gene_attrs/*.json annotations + gene_crop/ images."""

from __future__ import annotations

import pathlib

from reid_jax.data.synthetic.attributes import sample_identity
from reid_jax.data.synthetic.captions import make_caption, mals_label
from reid_jax.data.synthetic.config import SyntheticConfig, rng_for
from reid_jax.data.synthetic.render import CameraLook, render_image
from reid_jax.data.synthetic.scene import sample_scene
from reid_jax.data.synthetic.writers import encode_jpeg, make_dirs, write_bytes, write_json

TAG = 3  # dataset tag of every random stream of this format


def mals_annotation_paths(root: pathlib.Path, config: SyntheticConfig) -> list[pathlib.Path]:
    """The annotation files build_mals writes, in their concatenation order."""
    return [
        root / "MALS" / "gene_attrs" / f"g_c_g_a_{j}_attrs.json" for j in range(config.mals_files)
    ]


def build_mals(root: pathlib.Path, config: SyntheticConfig, looks: tuple[CameraLook, ...]) -> dict:
    """Renders and writes MALS-format pre-training pairs (aptm §1.1).

    One caption per image, one identity per image; `label` holds the 27 attributes in
    ATTRIBUTE_NAMES order: the identity's value where the caption mentions the attribute,
    -1 where it does not. Images are camera-free and cleaner, like generated pictures.

    Args:
      root: dataset root; writes root/MALS/ (the MALS image root).
      config: sizes, image size, seed.
      looks: camera_looks(config.seed).

    Returns:
      statistics: pairs and files.
    """
    base = root / "MALS"
    subsets = [f"c_g_a_{j}" for j in range(config.mals_files)]
    make_dirs(base, ["gene_attrs"] + [f"gene_crop/{s}" for s in subsets])
    n = config.mals_pairs
    for j, (subset, path) in enumerate(
        zip(subsets, mals_annotation_paths(root, config), strict=True)
    ):
        entries = []
        for i in range(n * j // len(subsets), n * (j + 1) // len(subsets)):
            k = i - n * j // len(subsets)
            ident = sample_identity(rng_for(config.seed, TAG, 0, j, k))
            rng = rng_for(config.seed, TAG, 1, j, k)
            scene = sample_scene(rng, ident, 0, clean=True)
            pixels = render_image(ident, scene, config.image_size, looks, rng)
            rel = f"gene_crop/{subset}/{k}.jpg"
            write_bytes(base / rel, encode_jpeg(pixels, config.jpeg_quality))
            caption = make_caption(ident, scene, rng_for(config.seed, TAG, 2, j, k), style="blip")
            entries.append(
                {
                    "image": rel,
                    "caption": caption.text,
                    "image_id": f"{subset}_{k}",
                    "label": mals_label(ident, caption.mentioned),
                }
            )
        write_json(path, entries, sort_keys=False)
    return {"pairs": n, "files": len(subsets)}
