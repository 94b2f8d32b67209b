"""APTM: Swin-B image encoder, BERT text/cross encoder and heads (aptm §3).

Methods for ``model.apply(variables, ..., method=...)`` (B batch, T text tokens (56 for captions),
S = 1 + N image tokens (49), E image width (1024), D text width (768), d joint width (256),
K masked positions, V vocabulary)::

    encode_image(images [B, H, W, 3])            -> image_tokens [B, S, E], image_feats [B, d]
    encode_text(ids [B, T], mask [B, T])         -> text_tokens [B, T, D], text_feats [B, d]
    match(image_tokens, text_tokens, mask)       -> fused_tokens [B, T, D], itm_logits [B, 2]
    masked_lm(ids, mask, image_tokens, positions [B, K]) -> mlm_logits [B, K, V]
    temperature()                                -> temp [] (the ITC/IAC temperature)
    __call__(images, ids, mask, positions)       -> all of the above (creates every parameter)

Features ``*_feats`` are L2-normalised float32; ``itm_logits`` (class 1 = matched) and
``mlm_logits`` are float32. Top-level parameters (a file format; the APTM state dict uses the
same names with '.' and ``name.N`` -> ``name_N``)::

    vision_encoder/...           Swin (backbones/swin.py)
    text_encoder/bert/...        BERT (backbones/bert.py), fusion layers 6-11
    text_encoder/cls/...         MLM head (heads.py), decoder tied to the word embeddings
    vision_proj/{kernel,bias}    [E, d]      text_proj/{kernel,bias}   [D, d]
    itm_head/layers_{0,1,3}/...  (heads.py)  temp  [] (init 0.07, unclamped, aptm §3.3)
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from reid_jax.models.aptm.heads import BertForMaskedLM, ItmHead, torch_dense
from reid_jax.models.backbones.bert import BertModel
from reid_jax.models.backbones.swin import SwinTransformer


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """Row-wise L2 normalisation in float32 (PyTorch ``F.normalize``: divides by max(|x|, eps))."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class AptmModel(nn.Module):
    """The APTM network (defaults: Swin-B 384 x 128 window 8, bert-base-uncased split 6 + 6).

    Attributes:
      image_size: (H, W) input images.
      swin_embed_dim: Swin stage-1 width (E = 8 x this).
      swin_depths: Swin blocks per stage.
      swin_num_heads: Swin heads per stage.
      swin_window_size: configured Swin window (clipped per stage, aptm §3.1).
      drop_path_rate: Swin stochastic depth of the last block.
      vocab_size: BERT vocabulary V.
      text_hidden_size: D.
      text_num_layers: BERT layers (text + fusion).
      text_num_heads: BERT heads.
      text_intermediate_size: BERT FFN width.
      max_position_embeddings: BERT positions.
      fusion_layer: first BERT layer with cross-attention.
      text_dropout_rate: BERT hidden and attention dropout.
      embed_dim: joint ITC width d.
      temp_init: initial temperature.
      dtype: compute dtype (params, norm statistics, softmax, features and logits float32).
      remat: recompute every Swin block and BERT layer in the backward pass.
    """

    image_size: tuple[int, int] = (384, 128)
    swin_embed_dim: int = 128
    swin_depths: Sequence[int] = (2, 2, 18, 2)
    swin_num_heads: Sequence[int] = (4, 8, 16, 32)
    swin_window_size: int = 8
    drop_path_rate: float = 0.1
    vocab_size: int = 30522
    text_hidden_size: int = 768
    text_num_layers: int = 12
    text_num_heads: int = 12
    text_intermediate_size: int = 3072
    max_position_embeddings: int = 512
    fusion_layer: int = 6
    text_dropout_rate: float = 0.1
    embed_dim: int = 256
    temp_init: float = 0.07
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self) -> None:
        self.vision_encoder = SwinTransformer(
            image_size=tuple(self.image_size),
            embed_dim=self.swin_embed_dim,
            depths=tuple(self.swin_depths),
            num_heads=tuple(self.swin_num_heads),
            window_size=self.swin_window_size,
            drop_path_rate=self.drop_path_rate,
            dtype=self.dtype,
            remat=self.remat,
        )
        image_width = self.vision_encoder.num_features
        bert = BertModel(
            vocab_size=self.vocab_size,
            hidden_size=self.text_hidden_size,
            num_layers=self.text_num_layers,
            num_heads=self.text_num_heads,
            intermediate_size=self.text_intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            dropout_rate=self.text_dropout_rate,
            fusion_layer=self.fusion_layer,
            dtype=self.dtype,
            remat=self.remat,
            parent=None,
        )
        self.text_encoder = BertForMaskedLM(bert)
        self.vision_proj = torch_dense(self.embed_dim, image_width, "vision_proj")
        self.text_proj = torch_dense(self.embed_dim, self.text_hidden_size, "text_proj")
        self.itm_head = ItmHead(self.text_hidden_size, self.dtype)
        self.temp = self.param("temp", lambda _: jnp.asarray(self.temp_init, jnp.float32))

    def encode_image(self, images: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Image tokens and the ITC image feature.

        Args:
          images: [B, H, W, 3] normalised images.
          train: enables stochastic depth ('dropout' rng).

        Returns:
          'image_tokens': [B, S, E] (token 0 = mean token); 'image_feats': [B, d] float32, unit.
        """
        tokens = self.vision_encoder(images, train=train)["image_tokens"]
        feats = l2_normalize(self.vision_proj(tokens[:, 0].astype(jnp.float32)))
        return {"image_tokens": tokens, "image_feats": feats}

    def encode_text(
        self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, *, train: bool
    ) -> dict[str, jnp.ndarray]:
        """Text tower (BERT layers before ``fusion_layer``) and the ITC text feature.

        Args:
          input_ids: [B, T] int32 ids ([CLS] first).
          attention_mask: [B, T] 1 on real tokens.
          train: enables dropout ('dropout' rng).

        Returns:
          'text_tokens': [B, T, D]; 'text_feats': [B, d] float32, unit (from token 0).
        """
        tokens = self.text_encoder.bert.encode_text(input_ids, attention_mask, train=train)
        tokens = tokens["text_tokens"]
        feats = l2_normalize(self.text_proj(tokens[:, 0].astype(jnp.float32)))
        return {"text_tokens": tokens, "text_feats": feats}

    def match(
        self,
        image_tokens: jnp.ndarray,
        text_tokens: jnp.ndarray,
        attention_mask: jnp.ndarray,
        *,
        train: bool,
    ) -> dict[str, jnp.ndarray]:
        """Cross encoder over (text, image) pairs and the ITM logits.

        Args:
          image_tokens: [B, S, E] from ``encode_image`` (all tokens valid).
          text_tokens: [B, T, D] from ``encode_text``.
          attention_mask: [B, T] text padding mask.
          train: enables dropout.

        Returns:
          'fused_tokens': [B, T, D]; 'itm_logits': [B, 2] float32 (class 1 = matched).
        """
        fused = self.text_encoder.bert.fuse(text_tokens, attention_mask, image_tokens, train=train)
        fused = fused["fused_tokens"]
        return {"fused_tokens": fused, "itm_logits": self.itm_head(fused[:, 0])}

    def masked_lm(
        self,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        image_tokens: jnp.ndarray,
        positions: jnp.ndarray,
        *,
        train: bool,
    ) -> dict[str, jnp.ndarray]:
        """Full mode (all BERT layers from masked ids) and MLM logits at given positions.

        Args:
          input_ids: [B, T] masked ids.
          attention_mask: [B, T] text padding mask.
          image_tokens: [B, S, E] memory of the fusion layers.
          positions: [B, K] int32 positions to predict (K = 10 for captions, aptm §1.6).
          train: enables dropout.

        Returns:
          'mlm_logits': [B, K, V] float32.
        """
        bert = self.text_encoder.bert
        hidden = bert(input_ids, attention_mask, image_tokens, train=train)["hidden"]
        picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)
        return {"mlm_logits": self.text_encoder.mlm_logits(picked)}

    def temperature(self) -> jnp.ndarray:
        """[] float32 ITC / IAC temperature (unclamped, aptm §8.4)."""
        return self.temp

    def __call__(
        self,
        images: jnp.ndarray,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        positions: jnp.ndarray,
        *,
        train: bool,
    ) -> dict[str, jnp.ndarray]:
        """Every output for matched (image, text) pairs; ``init`` through it creates all params.

        Args:
          images: [B, H, W, 3]; input_ids, attention_mask: [B, T]; positions: [B, K] int32
            (``input_ids`` are used unmasked for the MLM logits here).
          train: enables dropout and stochastic depth.

        Returns:
          The outputs of ``encode_image``, ``encode_text``, ``match`` and ``masked_lm``, plus
          'temp': [].
        """
        image = self.encode_image(images, train=train)
        text = self.encode_text(input_ids, attention_mask, train=train)
        fused = self.match(image["image_tokens"], text["text_tokens"], attention_mask, train=train)
        mlm = self.masked_lm(
            input_ids, attention_mask, image["image_tokens"], positions, train=train
        )
        return {**image, **text, **fused, **mlm, "temp": self.temperature()}


TINY_FIELDS: dict[str, Any] = dict(
    image_size=(64, 32),
    swin_embed_dim=8,
    swin_depths=(2, 2, 2, 2),
    swin_num_heads=(1, 2, 2, 4),
    swin_window_size=4,
    vocab_size=64,
    text_hidden_size=16,
    text_num_layers=4,
    text_num_heads=2,
    text_intermediate_size=32,
    max_position_embeddings=32,
    fusion_layer=2,
    embed_dim=8,
)
"""A few-thousand-parameter APTM for tests and smoke runs: ``AptmModel(**TINY_FIELDS)``.
64 x 32 images give 16 x 8 patch tokens: stage 1 shifts by 2, stage 2 (8 x 4) keeps its window
unshifted and stages 3-4 (4 x 2, 2 x 1) clip it, as Swin-B's stages 3-4 do at 384 x 128."""
