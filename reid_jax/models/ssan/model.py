"""SSAN: ResNet-50 image branch + BiLSTM text branch with shared part and relation heads.

Architecture facts: ssan §2 and §7.1/§7.3. Sharing (ssan §2.0): ``conv_global``, ``conv_local``,
the MV-NLN and the three ID classifier sets are one set of weights used by both modalities. The
trunk lives under ``backbone/`` (the optimiser's ``^backbone/`` group, lr x 0.1); everything else
is a head.

Parameter tree (a file format)::

    backbone/...                    ResNet trunk (see backbones/resnet.py)
    global_embedding  [V, E]        E_glob, row 0 = padding
    local_embedding   [V, E]        E_loc, row 0 = padding
    bilstm/{input_kernel [2, E, H], recurrent_kernel [2, H, 4H]}
    word_attention/kernel [H, K]    WAM
    conv_global/kernel [H, D]       shared image/text global projection
    conv_local/kernel [K, H, D]     shared per-part projections
    relation/...                    shared MV-NLN (see multi_view_non_local.py)
    classifier_global/{kernel [D, C], bias [C]}
    classifier_parts/{kernel [K, D, C], bias [K, C]}
    classifier_relation/{kernel [K, R, C], bias [K, C]}
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.models.backbones.bilstm import BiLstm
from reid_jax.models.backbones.resnet import ResNet, resnet_output_channels
from reid_jax.models.ssan.multi_view_non_local import MultiViewNonLocal, PartDense
from reid_jax.models.ssan.word_attention import WordAttention

Feats = dict[str, jnp.ndarray]

# SsanModel.remat values, cheapest in memory last (measured in benchmarks/RESULTS.md).
REMAT_POLICIES = ("none", "backbone", "all")

# Kaiming normal fan_out (ssan §2.10); for a Dense kernel [C_in, C_out] fan_out = C_out.
projection_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
classifier_init = nn.initializers.normal(stddev=0.001)


def _embedding_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    # N(0, 1) with the padding row 0 zeroed (PyTorch padding_idx=0).
    return jax.random.normal(key, shape, dtype).at[0].set(0.0)


def adaptive_max_pool_rows(feature_map: jnp.ndarray, num_bins: int) -> jnp.ndarray:
    """PyTorch ``AdaptiveMaxPool2d((num_bins, 1))``: max over horizontal stripes.

    Bin i covers rows ``floor(i H / K) .. ceil((i + 1) H / K) - 1`` (equal stripes when K
    divides H) and all columns.

    Args:
      feature_map: [B, H, W, C].
      num_bins: K.

    Returns:
      [B, K, C].
    """
    height = feature_map.shape[1]
    bins = []
    for i in range(num_bins):
        start = (i * height) // num_bins
        end = -((-(i + 1) * height) // num_bins)
        bins.append(jnp.max(feature_map[:, start:end], axis=(1, 2)))
    return jnp.stack(bins, axis=1)


class SsanModel(nn.Module):
    """Semantically Self-Aligned Network (image and text encoders plus ID classifiers).

    Attributes:
      num_classes: C training identities (11000 CUHK-PEDES, 3102 ICFG-PEDES).
      vocab_size: V, rows of each embedding table (id 0 = padding).
      embed_dim: E word-embedding width.
      lstm_hidden: H per direction; must equal the backbone's output channels (2048).
      feature_dim: D of the global and part features.
      num_parts: K stripes / word-attention parts.
      relation_dim: R of the MV-NLN output (D // 2).
      backbone_depth: ResNet depth (18, 34, 50).
      backbone_width: ResNet width multiplier (tests only).
      last_stride: stride of ResNet stage 4.
      dropout_rate: dropout on the word embeddings.
      leaky_slope: LeakyReLU negative slope.
      dtype: compute dtype; params, BN statistics, softmax and all returned arrays are float32.
      remat: rematerialisation (activation recomputation in the backward pass), one of
        ``REMAT_POLICIES``: 'none'; 'backbone' recomputes each ResNet residual block; 'all'
        also recomputes the WAM's [B, T, K, H] weighted words (the BiLSTM always keeps only
        its gate pre-activations and cell states, see ``backbones.bilstm``). Parameter paths
        and results are unchanged; only memory and backward FLOPs change (on CPU see
        ``training.tasks.ssan.compiler_options``).
    """

    num_classes: int
    vocab_size: int = 5000
    embed_dim: int = 512
    lstm_hidden: int = 2048
    feature_dim: int = 1024
    num_parts: int = 6
    relation_dim: int = 512
    backbone_depth: int = 50
    backbone_width: float = 1.0
    last_stride: int = 2
    dropout_rate: float = 0.3
    leaky_slope: float = 0.25
    dtype: Any = jnp.float32
    remat: str = "none"

    def setup(self) -> None:
        if self.remat not in REMAT_POLICIES:
            raise ValueError(
                f"SsanModel: remat must be one of {REMAT_POLICIES}, got {self.remat!r}"
            )
        channels = resnet_output_channels(self.backbone_depth, self.backbone_width)
        if channels != self.lstm_hidden:
            raise ValueError(
                f"SsanModel: backbone output channels ({channels} for depth "
                f"{self.backbone_depth}, width {self.backbone_width}) must equal lstm_hidden "
                f"({self.lstm_hidden}) because conv_global/conv_local are shared"
            )
        remat_text = self.remat == "all"
        self.backbone = ResNet(
            self.backbone_depth,
            self.backbone_width,
            self.last_stride,
            dtype=self.dtype,
            remat=self.remat != "none",
        )
        shape = (self.vocab_size, self.embed_dim)
        self.global_embedding = self.param("global_embedding", _embedding_init, shape)
        self.local_embedding = self.param("local_embedding", _embedding_init, shape)
        self.embedding_dropout = nn.Dropout(self.dropout_rate)
        self.bilstm = BiLstm(self.lstm_hidden, dtype=self.dtype)
        # nn.remat keeps the attribute name, hence the parameter path word_attention/kernel.
        word_attention_cls = nn.remat(WordAttention) if remat_text else WordAttention
        self.word_attention = word_attention_cls(self.num_parts, dtype=self.dtype)
        self.conv_global = nn.Dense(
            self.feature_dim, use_bias=False, kernel_init=projection_init, dtype=self.dtype
        )
        self.conv_local = PartDense(self.feature_dim, dtype=self.dtype)
        self.relation = MultiViewNonLocal(self.relation_dim, self.leaky_slope, dtype=self.dtype)
        self.classifier_global = nn.Dense(self.num_classes, kernel_init=classifier_init)
        self.classifier_parts = PartDense(
            self.num_classes, use_bias=True, kernel_init=classifier_init
        )
        self.classifier_relation = PartDense(
            self.num_classes, use_bias=True, kernel_init=classifier_init
        )

    def _leaky(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.leaky_relu(x, self.leaky_slope)

    def _image_pfl(self, images: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Image global feature [B, D] and activated part features [B, K, D]."""
        feature_map = self.backbone(images, train=train)["feature_map"]  # [B, h, w, H]
        pooled = jnp.max(feature_map, axis=(1, 2))  # global *max* pool (ssan §2.2)
        stripes = adaptive_max_pool_rows(feature_map, self.num_parts)
        return self.conv_global(pooled), self._leaky(self.conv_local(stripes))

    def _text_pfl(
        self, captions: jnp.ndarray, lengths: jnp.ndarray, train: bool
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Text global [N, D] and activated part features [N, K, D] for N captions.

        Both streams (E_glob and E_loc) go through the shared BiLSTM as one [2N, T] batch.
        """
        valid = jnp.arange(captions.shape[1])[None, :] < lengths[:, None]  # [N, T]
        keep = (captions != 0)[..., None]  # padding row gets neither value nor gradient
        embedded = jnp.concatenate(
            [
                jnp.take(self.global_embedding, captions, axis=0) * keep,
                jnp.take(self.local_embedding, captions, axis=0) * keep,
            ]
        )  # [2N, T, E]
        # One dropout call: elementwise masks, hence independent per stream.
        embedded = self.embedding_dropout(embedded, deterministic=not train)
        words = self.bilstm(embedded, jnp.concatenate([lengths, lengths]))  # [2N, T, H]
        global_words, local_words = jnp.split(words, 2)
        # Max over ALL T steps: padded steps are exact zeros and take part (ssan §2.5).
        text_global = self.conv_global(jnp.max(global_words, axis=1))
        parts = self.word_attention(local_words, valid)["parts"]
        return text_global, self._leaky(self.conv_local(parts))

    def _feats(self, global_feat: jnp.ndarray, parts: jnp.ndarray, train: bool) -> Feats:
        relation = self.relation(parts, train=train)["relation"]
        return {
            "global": global_feat.astype(jnp.float32),
            "parts": parts.astype(jnp.float32),
            "relation": relation.astype(jnp.float32),
        }

    def _logits(self, feats: Feats) -> Feats:
        return {
            "global": self.classifier_global(feats["global"]),
            "parts": self.classifier_parts(feats["parts"]),
            "relation": self.classifier_relation(feats["relation"]),
        }

    def encode_image(self, images: jnp.ndarray, *, train: bool = False) -> Feats:
        """Image features.

        Args:
          images: [B, H, W, 3] float, normalised (384 x 128 in SSAN).
          train: batch statistics (True) or running statistics (False).

        Returns:
          {'global': [B, D], 'parts': [B, K, D] (post-LeakyReLU PFL),
           'relation': [B, K, R]}, all float32.
        """
        return self._feats(*self._image_pfl(images, train), train)

    def encode_text(
        self, captions: jnp.ndarray, lengths: jnp.ndarray, *, train: bool = False
    ) -> Feats:
        """Text features.

        Args:
          captions: [B, T] int32 word ids, 0 = padding, ids < vocab_size.
          lengths: [B] int32 valid lengths (0 <= L <= T; tokens at t >= L are ignored).
          train: dropout (needs the 'dropout' rng) and batch statistics.

        Returns:
          Same dict as ``encode_image``, float32.
        """
        return self._feats(*self._text_pfl(captions, lengths, train), train)

    def __call__(
        self,
        images: jnp.ndarray,
        captions: jnp.ndarray,
        caption_lengths: jnp.ndarray,
        partner_captions: jnp.ndarray,
        partner_lengths: jnp.ndarray,
        *,
        train: bool,
    ) -> dict[str, Any]:
        """Training forward pass over an image batch, its captions and partner captions.

        The MV-NLN runs once per modality in the order image, caption, partner, each call with
        its own batch statistics (ssan §2.8).

        Args:
          images: [B, H, W, 3] float.
          captions: [B, T] int32 word ids of each image's caption.
          caption_lengths: [B] int32.
          partner_captions: [B, T] int32, another caption of the same identity.
          partner_lengths: [B] int32.
          train: dropout + batch statistics (apply with ``mutable=['batch_stats']`` and a
            'dropout' rng) or eval mode.

        Returns:
          {'image': feats, 'text': feats, 'partner': feats,
           'logits': {'image': logit_dict, 'text': logit_dict}} where feats is as in
          ``encode_image`` and logit_dict = {'global': [B, C], 'parts': [B, K, C],
          'relation': [B, K, C]}, all float32.
        """
        batch = captions.shape[0]
        image = self._feats(*self._image_pfl(images, train), train)
        text_global, text_parts = self._text_pfl(
            jnp.concatenate([captions, partner_captions]),
            jnp.concatenate([caption_lengths, partner_lengths]),
            train,
        )
        text = self._feats(text_global[:batch], text_parts[:batch], train)
        partner = self._feats(text_global[batch:], text_parts[batch:], train)
        # One classifier call over both modalities: one [2B, C] product per classifier, so the
        # backward pass writes each [.., C] kernel gradient once instead of twice and adds them.
        both = self._logits(jax.tree.map(lambda a, b: jnp.concatenate([a, b]), image, text))
        return {
            "image": image,
            "text": text,
            "partner": partner,
            "logits": {
                "image": jax.tree.map(lambda x: x[:batch], both),
                "text": jax.tree.map(lambda x: x[batch:], both),
            },
        }
