"""APTM heads (aptm §3.3): BERT's MLM head tied to the word embeddings, the ITM head, the
PyTorch-default initialisers of the new layers, and ``BertForMaskedLM`` (BERT + MLM head).

Parameter names (a file format), next to the APTM / Hugging Face state-dict names::

    cls.predictions.transform.{dense,LayerNorm}.*   cls/predictions/transform/{dense,LayerNorm}/*
    cls.predictions.bias [V]                        cls/predictions/bias
    cls.predictions.decoder.{weight,bias}           (tied: word embeddings and predictions.bias)
    itm_head.{0,1,3}.*                              itm_head/layers_{0,1,3}/*  (Linear, LN, Linear)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.models.backbones.bert import BertModel, exact_gelu

# PyTorch's default Linear init: weight and bias uniform in +-1/sqrt(fan_in) (aptm §3.3).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) bias initialiser (PyTorch Linear default)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        bound = fan_in**-0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_dense(features: int, fan_in: int, name: str, dtype: Any = jnp.float32) -> nn.Dense:
    """``nn.Dense`` with PyTorch's default Linear initialisation."""
    return nn.Dense(
        features,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(fan_in),
        dtype=dtype,
        name=name,
    )


class BertLmPredictionHead(nn.Module):
    """transform (dense -> GELU -> LayerNorm) -> tied decoder + ``bias`` (HF cls.predictions).

    Attributes:
      hidden_size: D.
      vocab_size: V.
      layer_norm_eps: LayerNorm epsilon (1e-12).
      dtype: compute dtype of the transform; the logits are float32.
    """

    hidden_size: int
    vocab_size: int
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, word_table: jnp.ndarray) -> jnp.ndarray:
        """x [..., D], word_table [V, D] -> [..., V] float32 logits."""
        transform = BertTransform(
            self.hidden_size, self.layer_norm_eps, self.dtype, name="transform"
        )
        y = transform(x).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,), jnp.float32)
        return y @ word_table.T + bias


class BertTransform(nn.Module):
    """``dense`` -> exact GELU -> ``LayerNorm``.

    Attributes:
      hidden_size: D.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype.
    """

    hidden_size: int
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[..., D] -> [..., D]."""
        kernel_init = nn.initializers.normal(0.02)
        y = nn.Dense(self.hidden_size, kernel_init=kernel_init, dtype=self.dtype, name="dense")(x)
        return nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="LayerNorm")(exact_gelu(y))


class BertMlmHead(nn.Module):
    """HF ``BertOnlyMLMHead`` (``cls``): holds ``predictions``.

    Attributes:
      hidden_size: D.
      vocab_size: V.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype.
    """

    hidden_size: int
    vocab_size: int
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, word_table: jnp.ndarray) -> jnp.ndarray:
        """x [..., D], word_table [V, D] -> [..., V] float32 logits."""
        return BertLmPredictionHead(
            self.hidden_size, self.vocab_size, self.layer_norm_eps, self.dtype, name="predictions"
        )(x, word_table)


class ItmHead(nn.Module):
    """Image-text matching head: Linear(D -> 2D) -> LayerNorm(eps 1e-5) -> GELU -> Linear(2D -> 2).

    Attributes:
      hidden_size: input width D (768).
      dtype: compute dtype of the hidden layer; the logits are float32.
    """

    hidden_size: int = 768
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, D] fused [CLS] -> [B, 2] float32 logits; class 1 = matched."""
        d = self.hidden_size
        y = torch_dense(2 * d, d, "layers_0", self.dtype)(x)
        y = exact_gelu(nn.LayerNorm(1e-5, dtype=self.dtype, name="layers_1")(y))
        return torch_dense(2, 2 * d, "layers_3")(y.astype(jnp.float32))


class BertForMaskedLM(nn.Module):
    """BERT (``bert``) plus its MLM head (``cls``) tied to the word embeddings.

    Attributes:
      bert: the encoder's hyperparameters (an unbound ``BertModel``; adopted as ``bert``).
    """

    bert: BertModel

    def setup(self) -> None:
        self.cls = BertMlmHead(
            self.bert.hidden_size, self.bert.vocab_size, self.bert.layer_norm_eps, self.bert.dtype
        )

    def mlm_logits(self, hidden: jnp.ndarray) -> jnp.ndarray:
        """[..., D] hidden states -> [..., V] float32 vocabulary logits."""
        return self.cls(hidden, self.bert.embeddings.word_table())

    def __call__(
        self,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        image_tokens: jnp.ndarray | None = None,
        image_mask: jnp.ndarray | None = None,
        *,
        train: bool,
    ) -> dict[str, jnp.ndarray]:
        """Full mode plus MLM logits at every position.

        Args:
          input_ids: [B, T] int32 ids.
          attention_mask: [B, T] text padding mask.
          image_tokens: [B, S, E] (needed when BERT has fusion layers).
          image_mask: [B, S] or None.
          train: enables dropout.

        Returns:
          ``BertModel`` outputs plus 'mlm_logits': [B, T, V] float32.
        """
        out = self.bert(input_ids, attention_mask, image_tokens, image_mask, train=train)
        return {**out, "mlm_logits": self.mlm_logits(out["hidden"])}
