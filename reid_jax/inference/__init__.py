"""Inference without model code: `load_bundle(path)` reads an exported bundle."""

from reid_jax.inference.bundle import Bundle, BundleError, load_bundle

__all__ = ["Bundle", "BundleError", "load_bundle"]
