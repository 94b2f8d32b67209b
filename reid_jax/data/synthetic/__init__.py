"""Embedded default dataset: procedural pedestrians with identities, cameras, attributes, captions.

A small offline cousin of MALS written in the real formats (CUHK-PEDES `reid_raw.json`,
Market-1501 folders + `market_attribute.mat`, MALS json + `gene_crop/`), so every method runs
without downloads. `python -m reid_jax.data.synthetic --out DIR` writes one; see
docs/synthetic_dataset.md.
"""

from reid_jax.data.synthetic.attributes import ATTRIBUTE_NAMES, MARKET_ATTRIBUTE_NAMES
from reid_jax.data.synthetic.config import GENERATOR_VERSION, SyntheticConfig
from reid_jax.data.synthetic.generate import (
    dataset_paths,
    ensure_dataset,
    generate_dataset,
    is_complete,
)

__all__ = [
    "ATTRIBUTE_NAMES",
    "GENERATOR_VERSION",
    "MARKET_ATTRIBUTE_NAMES",
    "SyntheticConfig",
    "dataset_paths",
    "ensure_dataset",
    "generate_dataset",
    "is_complete",
]
