"""Word Attention Module (WAM): text part features from word-level features (ssan §2.6)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _torch_conv_default_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    # PyTorch's default 1x1 conv init for a [D, K] kernel: U(-1/sqrt(D), +1/sqrt(D)) (ssan §2.10).
    bound = 1.0 / shape[0] ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class WordAttention(nn.Module):
    """Per-part word attention followed by a max over valid words.

    ``a[b, t, k] = sigmoid(x[b, t] . w_k)`` (bias-free 1x1 conv) and
    ``s[b, k] = max over valid t of a[b, t, k] * x[b, t]``.

    Parameter: ``kernel`` [D, K] (PyTorch conv weight [K, D, 1, 1] transposed).

    Attributes:
      num_parts: K (6 in SSAN).
      dtype: compute dtype.
    """

    num_parts: int = 6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, word_feats: jnp.ndarray, valid: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Computes the word-attended part features.

        Args:
          word_feats: [B, T, D] float word features (X_loc of the BiLSTM).
          valid: [B, T] bool, True for real (non-padded) words.

        Returns:
          {'parts': [B, K, D] in ``dtype`` (0 for a sequence without valid words),
           'attention': [B, T, K] float32 sigmoid weights}.
        """
        kernel = self.param(
            "kernel", _torch_conv_default_init, (word_feats.shape[-1], self.num_parts)
        )
        x = jnp.asarray(word_feats, self.dtype)
        logits = jnp.einsum(
            "btd,dk->btk", x, jnp.asarray(kernel, self.dtype), preferred_element_type=jnp.float32
        )
        attention = jax.nn.sigmoid(logits)  # [B, T, K]
        weighted = x[:, :, None, :] * attention.astype(self.dtype)[:, :, :, None]  # [B, T, K, D]
        lowest = jnp.finfo(weighted.dtype).min
        weighted = jnp.where(valid[:, :, None, None], weighted, lowest)
        parts = jnp.max(weighted, axis=1)  # [B, K, D]
        parts = jnp.where(jnp.any(valid, axis=1)[:, None, None], parts, 0.0).astype(self.dtype)
        return {"parts": parts, "attention": attention}
