"""Attribute–image joint space (Yin et al.): attribute-guided image branch, concept generator
and the semantic-consistent discriminator. Every layer size is the design of
attribute_reid §3 [D] (the paper's body was not available).

Modules (B images, A attribute columns, G attribute groups, d joint width)::

    AttributeImageBranch(images [B, H, W, 3]) -> 'embedding' [B, d], 'attribute_logits'
        [B, A], 'attention' [B, G, h, w]  (§3.1)
    ConceptGenerator(attributes [M, A])       -> 'embedding' [M, d]              (§3.2)
    Discriminator(embeddings [N, d])           -> 'real_logits' [N], 'attribute_logits' [N, A]
                                                                                 (§3.3)

Attribute groups: `groups[g]` = the columns of group g (e.g. Market: 12 groups, the age
group's 4 one-hot columns and the colour groups' flags together); the heads of group g read
only its own attention-pooled vector, so the attention is guided by the attributes.

Parameter trees (a file format)::

    AttributeImageBranch: backbone/... (backbones/resnet.py), reduce_conv/kernel,
        reduce_bn/*, attention/{kernel, bias} [1, 1, c, G], head_{g}/{kernel, bias},
        embed/{kernel, bias}, embed_bn/*
    ConceptGenerator: dense_{0,1}/*, bn_{0,1}/*, out/*, out_bn/*
    Discriminator: dense_{0,1}/*, real/*, attributes/*
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.models.backbones.resnet import ResNet


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class AttributeImageBranch(nn.Module):
    """ResNet trunk (last stride 1) -> 1x1 reduce -> one spatial softmax attention per
    attribute group -> per-group attribute heads, and the embedding
    BN(W [v_1; ...; v_G; GAP]) (attribute_reid §3.1).

    Attributes:
      groups: the attribute columns of each group (together: every column 0..A-1 once).
      embed_dim: d.
      reduce_dim: c, channels after the 1x1 reduction (512 in the design).
      backbone_depth, width_multiplier: the ResNet trunk (tests use tiny widths).
      dtype: compute dtype (params, BN statistics, softmax and outputs float32).
    """

    groups: Sequence[Sequence[int]]
    embed_dim: int = 512
    reduce_dim: int = 512
    backbone_depth: int = 50
    width_multiplier: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Args: images [B, H, W, 3] normalised; train: BN in batch-statistics mode.

        Returns: 'embedding' [B, d], 'attribute_logits' [B, A] (column order), 'attention'
        [B, G, h, w] (each map sums to 1), all float32.
        """
        trunk = ResNet(
            depth=self.backbone_depth,
            width_multiplier=self.width_multiplier,
            last_stride=1,
            dtype=self.dtype,
            name="backbone",
        )
        fmap = trunk(images, train=train)["feature_map"]
        x = nn.Conv(self.reduce_dim, (1, 1), use_bias=False, dtype=self.dtype, name="reduce_conv")(
            fmap
        )
        x = nn.relu(_batch_norm(train, "reduce_bn")(x)).astype(jnp.float32)  # [B, h, w, c]
        b, h, w, c = x.shape
        logits = nn.Conv(len(self.groups), (1, 1), name="attention")(x)  # [B, h, w, G]
        attention = jax.nn.softmax(logits.reshape(b, h * w, -1), axis=1)  # over positions
        pooled = jnp.einsum("bpg,bpc->bgc", attention, x.reshape(b, h * w, c))  # [B, G, c]
        num_columns = sum(len(cols) for cols in self.groups)
        attribute_logits = jnp.zeros((b, num_columns), jnp.float32)
        for g, cols in enumerate(self.groups):
            head = nn.Dense(len(cols), name=f"head_{g}")(pooled[:, g])
            attribute_logits = attribute_logits.at[:, jnp.asarray(cols)].set(head)
        parts = jnp.concatenate([pooled.reshape(b, -1), x.mean(axis=(1, 2))], axis=-1)
        embedding = _batch_norm(train, "embed_bn")(nn.Dense(self.embed_dim, name="embed")(parts))
        return {
            "embedding": embedding.astype(jnp.float32),
            "attribute_logits": attribute_logits,
            "attention": attention.reshape(b, h, w, -1).transpose(0, 3, 1, 2),
        }


class ConceptGenerator(nn.Module):
    """psi(a): MLP A -> 512 -> 1024 -> d, BN + LeakyReLU(0.2) after the hidden layers and BN on
    the output (attribute_reid §3.2; deterministic, no noise input).

    Attributes:
      embed_dim: d.
      hidden: the hidden widths.
    """

    embed_dim: int = 512
    hidden: Sequence[int] = (512, 1024)

    @nn.compact
    def __call__(self, attributes: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """Args: attributes [M, A] (0/1 floats or ints). Returns 'embedding' [M, d] float32."""
        x = attributes.astype(jnp.float32)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            x = nn.leaky_relu(_batch_norm(train, f"bn_{i}")(x), 0.2)
        x = _batch_norm(train, "out_bn")(nn.Dense(self.embed_dim, name="out")(x))
        return {"embedding": x}


class Discriminator(nn.Module):
    """D: MLP d -> 512 -> 256 (LeakyReLU 0.2) with a real/fake logit and A attribute logits
    (attribute_reid §3.3).

    Attributes:
      num_attributes: A.
      hidden: the hidden widths.
    """

    num_attributes: int
    hidden: Sequence[int] = (512, 256)

    @nn.compact
    def __call__(self, embeddings: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Args: embeddings [N, d]. Returns 'real_logits' [N], 'attribute_logits' [N, A]."""
        x = embeddings.astype(jnp.float32)
        for i, width in enumerate(self.hidden):
            x = nn.leaky_relu(nn.Dense(width, name=f"dense_{i}")(x), 0.2)
        return {
            "real_logits": nn.Dense(1, name="real")(x)[:, 0],
            "attribute_logits": nn.Dense(self.num_attributes, name="attributes")(x),
        }


class AttributeJointSpace(nn.Module):
    """The three players and the semantic-ID classifier in one parameter tree (attribute_reid
    §3): `image` (AttributeImageBranch), `generator` (ConceptGenerator), `discriminator`
    (Discriminator) and `sid_weights` [S, d], the shared cosine classifier W_s (§3.4).

    Attributes:
      groups: attribute groups of the image branch (see AttributeImageBranch).
      num_sids: S, distinct training vectors.
      embed_dim, reduce_dim, backbone_depth, width_multiplier, dtype: the image branch.
      generator_hidden, discriminator_hidden: MLP widths.
    """

    groups: Sequence[Sequence[int]]
    num_sids: int
    embed_dim: int = 512
    reduce_dim: int = 512
    backbone_depth: int = 50
    width_multiplier: float = 1.0
    generator_hidden: Sequence[int] = (512, 1024)
    discriminator_hidden: Sequence[int] = (512, 256)
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.image = AttributeImageBranch(
            groups=self.groups,
            embed_dim=self.embed_dim,
            reduce_dim=self.reduce_dim,
            backbone_depth=self.backbone_depth,
            width_multiplier=self.width_multiplier,
            dtype=self.dtype,
        )
        self.generator = ConceptGenerator(embed_dim=self.embed_dim, hidden=self.generator_hidden)
        self.discriminator = Discriminator(
            num_attributes=sum(len(cols) for cols in self.groups), hidden=self.discriminator_hidden
        )
        self.sid_weights = self.param(
            "sid_weights", nn.initializers.normal(0.01), (self.num_sids, self.embed_dim)
        )

    def encode_image(self, images: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """φ: see AttributeImageBranch."""
        return self.image(images, train=train)

    def encode_attributes(self, attributes: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """ψ: [M, A] vectors -> [M, d] concepts."""
        return self.generator(attributes, train=train)["embedding"]

    def discriminate(self, embeddings: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """D: see Discriminator."""
        return self.discriminator(embeddings)

    def semantic_id_weights(self) -> jnp.ndarray:
        """W_s [S, d]."""
        return self.sid_weights

    def __call__(
        self, images: jnp.ndarray, attributes: jnp.ndarray, *, train: bool
    ) -> dict[str, Any]:
        """Every player at once: 'image' (φ outputs), 'concepts' [M, d], 'real' and 'fake'
        (D on the image embeddings and on the concepts), 'sid_weights' [S, d]."""
        image = self.encode_image(images, train=train)
        concepts = self.encode_attributes(attributes, train=train)
        return {
            "image": image,
            "concepts": concepts,
            "real": self.discriminate(image["embedding"]),
            "fake": self.discriminate(concepts),
            "sid_weights": self.sid_weights,
        }
