"""BERT text encoder, cross encoder and MLM head as APTM / X-VLM split them (aptm §3.2).

Layers ``[0, fusion_layer)`` are plain post-LN BERT layers (the text encoder); layers
``[fusion_layer, num_layers)`` add a cross-attention to image tokens between self-attention and
the FFN, with keys/values projected from the image width (1024 for Swin-B) to the text width.
With ``fusion_layer == num_layers`` the module is a plain Hugging Face ``BertModel`` without
pooler. GELU is the exact erf form; LayerNorm eps is 1e-12 everywhere (aptm §8.4); padding is
masked with an additive -10000 on attention keys.

Parameter names (a file format) follow the Hugging Face ``BertForMaskedLM`` state dict, with a
numeric name segment joined to its parent by ``_``, Linear weights transposed ([out, in] ->
[in, out]), LayerNorm weight -> scale and Embedding weight -> embedding::

    bert.embeddings.{word,position,token_type}_embeddings.weight   bert/embeddings/*/embedding
    bert.embeddings.LayerNorm.{weight,bias}                        bert/embeddings/LayerNorm/*
    bert.encoder.layer.{i}.attention.self.{query,key,value}.*      bert/encoder/layer_{i}/...
    bert.encoder.layer.{i}.attention.output.{dense,LayerNorm}.*      (same sub-path)
    bert.encoder.layer.{i}.crossattention.{self,output}.*          (layers >= fusion_layer)
    bert.encoder.layer.{i}.intermediate.dense.*, output.{dense,LayerNorm}.*

The MLM head (``cls.predictions.*``) is ``reid_jax.models.aptm.heads.BertMlmHead``.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

MASK_VALUE = -10000.0  # aptm §8.4: BERT's additive padding mask
exact_gelu = functools.partial(nn.gelu, approximate=False)


def attention_bias(mask: jnp.ndarray | None) -> jnp.ndarray | None:
    """[B, Tk] 1/0 key mask -> [B, 1, 1, Tk] float32 additive bias (None stays None)."""
    if mask is None:
        return None
    return ((1.0 - mask.astype(jnp.float32)) * MASK_VALUE)[:, None, None, :]


class BertSelfAttention(nn.Module):
    """Multi-head attention of queries from ``x`` over keys/values from ``memory``.

    Attributes:
      hidden_size: width D of queries and output.
      num_heads: heads (D must divide evenly).
      dropout_rate: dropout on attention probabilities.
      init_std: normal init std of the projections.
      dtype: compute dtype (logits and softmax stay float32).
    """

    hidden_size: int
    num_heads: int
    dropout_rate: float
    init_std: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, memory: jnp.ndarray, bias: jnp.ndarray | None, *, train: bool
    ) -> jnp.ndarray:
        """Attends.

        Args:
          x: [B, T, D] queries.
          memory: [B, S, E] keys/values (E may differ from D in cross-attention).
          bias: [B, 1, 1, S] additive float32 key bias or None.
          train: enables dropout ('dropout' rng).

        Returns:
          [B, T, D] context (before the output projection).
        """
        head_dim = self.hidden_size // self.num_heads
        dense = functools.partial(
            nn.Dense,
            self.hidden_size,
            kernel_init=nn.initializers.normal(self.init_std),
            dtype=self.dtype,
        )
        split = lambda y: y.reshape(*y.shape[:2], self.num_heads, head_dim)
        q = split(dense(name="query")(x))
        k = split(dense(name="key")(memory))
        v = split(dense(name="value")(memory))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / head_dim**0.5
        if bias is not None:
            logits = logits + bias
        probs = nn.softmax(logits, axis=-1)
        probs = nn.Dropout(self.dropout_rate, deterministic=not train)(probs).astype(self.dtype)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return context.reshape(*x.shape[:2], self.hidden_size)


class BertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual) (HF BertSelfOutput / BertOutput).

    Attributes:
      hidden_size: output width D.
      dropout_rate: dropout after the dense layer.
      layer_norm_eps: LayerNorm epsilon.
      init_std: normal init std.
      dtype: compute dtype.
    """

    hidden_size: int
    dropout_rate: float
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[B, T, D_in], residual [B, T, D] -> [B, T, D]."""
        kernel_init = nn.initializers.normal(self.init_std)
        y = nn.Dense(self.hidden_size, kernel_init=kernel_init, dtype=self.dtype, name="dense")(x)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        norm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="LayerNorm")
        return norm(y + residual)


class BertAttention(nn.Module):
    """Self- or cross-attention sub-layer: ``self`` attention then ``output`` residual block.

    Attributes:
      hidden_size: width D.
      num_heads: heads.
      dropout_rate: attention-probability and hidden dropout.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype.
    """

    hidden_size: int
    num_heads: int
    dropout_rate: float
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, memory: jnp.ndarray, bias: jnp.ndarray | None, *, train: bool
    ) -> jnp.ndarray:
        """x [B, T, D], memory [B, S, E], bias [B, 1, 1, S] or None -> [B, T, D]."""
        context = BertSelfAttention(
            self.hidden_size, self.num_heads, self.dropout_rate, dtype=self.dtype, name="self"
        )(x, memory, bias, train=train)
        return BertResidualOutput(
            self.hidden_size,
            self.dropout_rate,
            self.layer_norm_eps,
            dtype=self.dtype,
            name="output",
        )(context, x, train=train)


class BertLayer(nn.Module):
    """Post-LN BERT layer: self-attention, [cross-attention to image tokens], FFN.

    Attributes:
      hidden_size: width D.
      num_heads: heads.
      intermediate_size: FFN inner width.
      dropout_rate: hidden and attention dropout.
      layer_norm_eps: LayerNorm epsilon.
      cross_attention: add the ``crossattention`` sub-layer (fusion layers).
      dtype: compute dtype.
    """

    hidden_size: int
    num_heads: int
    intermediate_size: int
    dropout_rate: float
    layer_norm_eps: float = 1e-12
    cross_attention: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        bias: jnp.ndarray | None,
        image_tokens: jnp.ndarray | None = None,
        image_bias: jnp.ndarray | None = None,
        *,
        train: bool,
    ) -> jnp.ndarray:
        """Applies the layer.

        Args:
          x: [B, T, D] text stream.
          bias: [B, 1, 1, T] additive self-attention key bias or None.
          image_tokens: [B, S, E] cross-attention memory (fusion layers only).
          image_bias: [B, 1, 1, S] additive bias for the image keys or None.
          train: enables dropout.

        Returns:
          [B, T, D].
        """
        attention = functools.partial(
            BertAttention,
            self.hidden_size,
            self.num_heads,
            self.dropout_rate,
            self.layer_norm_eps,
            self.dtype,
        )
        x = attention(name="attention")(x, x, bias, train=train)
        if self.cross_attention:
            x = attention(name="crossattention")(x, image_tokens, image_bias, train=train)
        y = BertIntermediate(self.intermediate_size, dtype=self.dtype, name="intermediate")(x)
        return BertResidualOutput(
            self.hidden_size,
            self.dropout_rate,
            self.layer_norm_eps,
            dtype=self.dtype,
            name="output",
        )(y, x, train=train)


class BertIntermediate(nn.Module):
    """FFN expansion: ``dense`` -> exact GELU.

    Attributes:
      intermediate_size: inner width F.
      dtype: compute dtype.
    """

    intermediate_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, T, D] -> [B, T, F]."""
        dense = nn.Dense(
            self.intermediate_size,
            kernel_init=nn.initializers.normal(0.02),
            dtype=self.dtype,
            name="dense",
        )
        return exact_gelu(dense(x))


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings -> LayerNorm -> dropout.

    Attributes:
      vocab_size: V.
      hidden_size: D.
      max_position_embeddings: longest sequence.
      type_vocab_size: token types.
      dropout_rate: dropout after the LayerNorm.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype.
    """

    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    type_vocab_size: int
    dropout_rate: float
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32

    def setup(self) -> None:
        embed = functools.partial(
            nn.Embed, features=self.hidden_size, embedding_init=nn.initializers.normal(0.02)
        )
        self.word_embeddings = embed(self.vocab_size)
        self.position_embeddings = embed(self.max_position_embeddings)
        self.token_type_embeddings = embed(self.type_vocab_size)
        self.LayerNorm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype)
        self.dropout = nn.Dropout(self.dropout_rate)

    def __call__(
        self, input_ids: jnp.ndarray, token_type_ids: jnp.ndarray | None = None, *, train: bool
    ) -> jnp.ndarray:
        """[B, T] int ids (token types default to 0) -> [B, T, D] embeddings."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        positions = jnp.arange(input_ids.shape[1])[None]
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        x = self.LayerNorm(x)
        return self.dropout(x, deterministic=not train).astype(self.dtype)

    def word_table(self) -> jnp.ndarray:
        """[V, D] float32 word-embedding matrix (the MLM decoder is tied to it)."""
        return self.word_embeddings.embedding


class BertEncoder(nn.Module):
    """The stack of ``layer_{i}``; runs any contiguous range of layers.

    Attributes:
      num_layers: total layers L.
      fusion_layer: first layer with cross-attention (L = none).
      hidden_size, num_heads, intermediate_size, dropout_rate, layer_norm_eps: as ``BertLayer``.
      dtype: compute dtype.
      remat: recompute each layer in the backward pass (same parameter paths).
    """

    num_layers: int
    fusion_layer: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    dropout_rate: float
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        bias: jnp.ndarray | None,
        image_tokens: jnp.ndarray | None = None,
        image_bias: jnp.ndarray | None = None,
        *,
        start: int,
        stop: int,
        train: bool,
    ) -> jnp.ndarray:
        """Runs layers ``start .. stop - 1``.

        Args:
          x: [B, T, D] hidden states entering layer ``start``.
          bias: [B, 1, 1, T] additive key bias or None.
          image_tokens: [B, S, E]; required when the range reaches ``fusion_layer``.
          image_bias: [B, 1, 1, S] or None (all image tokens valid).
          start, stop: static layer range.
          train: enables dropout.

        Returns:
          [B, T, D] output of layer ``stop - 1``.
        """
        for index in range(start, stop):
            cross = index >= self.fusion_layer
            if cross and image_tokens is None:
                raise ValueError(f"BERT layer {index} cross-attends: pass image_tokens")
            make_layer = functools.partial(
                BertLayer,
                self.hidden_size,
                self.num_heads,
                self.intermediate_size,
                self.dropout_rate,
                self.layer_norm_eps,
                cross,
                self.dtype,
                name=f"layer_{index}",
            )

            def run(module, hidden, bias, image, image_bias, make_layer=make_layer):
                del module  # the scope nn.remat lifts; the layer binds to it on construction
                return make_layer()(hidden, bias, image, image_bias, train=train)

            memory = (image_tokens, image_bias) if cross else (None, None)
            x = (nn.remat(run) if self.remat else run)(self, x, bias, *memory)
        return x


class BertModel(nn.Module):
    """BERT without pooler, split into a text part and a fusion (cross-attention) part.

    Attributes:
      vocab_size: V (30,522 for bert-base-uncased).
      hidden_size: D.
      num_layers: L.
      num_heads: attention heads.
      intermediate_size: FFN width.
      max_position_embeddings: longest sequence.
      type_vocab_size: token types.
      dropout_rate: hidden and attention-probability dropout.
      layer_norm_eps: LayerNorm epsilon (1e-12, aptm §8.4).
      fusion_layer: first cross-attention layer (6 in APTM; L gives a plain BERT).
      dtype: compute dtype (params, norm statistics and softmax stay float32).
      remat: recompute each layer in the backward pass.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    fusion_layer: int = 6
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self) -> None:
        self.embeddings = BertEmbeddings(
            self.vocab_size,
            self.hidden_size,
            self.max_position_embeddings,
            self.type_vocab_size,
            self.dropout_rate,
            self.layer_norm_eps,
            self.dtype,
        )
        self.encoder = BertEncoder(
            self.num_layers,
            self.fusion_layer,
            self.hidden_size,
            self.num_heads,
            self.intermediate_size,
            self.dropout_rate,
            self.layer_norm_eps,
            self.dtype,
            self.remat,
        )

    def encode_text(
        self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, *, train: bool
    ) -> dict[str, jnp.ndarray]:
        """Text mode: embeddings + layers before ``fusion_layer``.

        Args:
          input_ids: [B, T] int32 token ids.
          attention_mask: [B, T] 1 on real tokens, 0 on padding.
          train: enables dropout.

        Returns:
          'text_tokens': [B, T, D].
        """
        x = self.embeddings(input_ids, train=train)
        x = self.encoder(
            x, attention_bias(attention_mask), start=0, stop=self.fusion_layer, train=train
        )
        return {"text_tokens": x}

    def fuse(
        self,
        text_tokens: jnp.ndarray,
        attention_mask: jnp.ndarray,
        image_tokens: jnp.ndarray,
        image_mask: jnp.ndarray | None = None,
        *,
        train: bool,
    ) -> dict[str, jnp.ndarray]:
        """Fusion mode: layers ``fusion_layer ..`` over text tokens, cross-attending to images.

        Args:
          text_tokens: [B, T, D] output of ``encode_text``.
          attention_mask: [B, T] text padding mask.
          image_tokens: [B, S, E] image tokens (S = 49, E = 1024 for Swin-B).
          image_mask: [B, S] or None (all valid, as in APTM).
          train: enables dropout.

        Returns:
          'fused_tokens': [B, T, D].
        """
        x = self.encoder(
            text_tokens,
            attention_bias(attention_mask),
            image_tokens,
            attention_bias(image_mask),
            start=self.fusion_layer,
            stop=self.num_layers,
            train=train,
        )
        return {"fused_tokens": x}

    def __call__(
        self,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        image_tokens: jnp.ndarray | None = None,
        image_mask: jnp.ndarray | None = None,
        *,
        train: bool,
    ) -> dict[str, jnp.ndarray]:
        """Full mode: text layers then fusion layers (plain BERT when fusion_layer == L).

        Returns:
          'text_tokens': [B, T, D] output of layer ``fusion_layer - 1``;
          'hidden': [B, T, D] output of the last layer.
        """
        text = self.encode_text(input_ids, attention_mask, train=train)["text_tokens"]
        hidden = text
        if self.fusion_layer < self.num_layers:
            hidden = self.fuse(text, attention_mask, image_tokens, image_mask, train=train)
            hidden = hidden["fused_tokens"]
        return {"text_tokens": text, "hidden": hidden}
