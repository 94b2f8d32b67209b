"""reid_jax: person re-identification and text-based person search in JAX/Flax."""

__version__ = "0.1.0"
