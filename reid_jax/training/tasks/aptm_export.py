"""APTM's inference bundle: its two-stage retrieval as exported functions (aptm §6, issue 12).

  encode_image  uint8 [b, H, W, 3] -> 'embedding' [b, d], the unit ITC image feature
  encode_text   input_ids, attention_mask int32 [b, T] -> 'embedding' [b, d], the unit ITC
                text feature (a dot product with an image embedding is the stage-1 cosine)
  score_pairs   image uint8 [b, H, W, 3], input_ids, attention_mask [b, T] -> 'itm_logit' [b],
                the class-1 ITM logit of each (image, text) pair: the stage-2 re-scorer

`score_pairs` re-encodes its images (Swin) instead of reading stored image tokens: an index
keeps one d-wide row per image, not S x E tokens (49 x 1024 floats for Swin-B), and the
second stage only ever sees the top k candidates of one query.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from reid_jax.data import aptm_examples
from reid_jax.training.tasks.base import TrainDataInfo


def export_encoders(model: nn.Module, config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """The bundle's encoders (see the module docstring), normalisation inside."""
    from reid_jax.export.bundle import Encoder, normalize_uint8

    del info
    height, width = config.data.image_size
    length = int(config.data.max_tokens)
    mean, std = aptm_examples.NORMALISATION[config.data.test_normalisation]
    image = ("image", "uint8", ("b", height, width, 3))
    text = [("input_ids", "int32", ("b", length)), ("attention_mask", "int32", ("b", length))]

    def image_out(variables, images):
        x = normalize_uint8(images, mean, std)
        return model.apply(variables, x, train=False, method=model.encode_image)

    def text_out(variables, input_ids, attention_mask):
        return model.apply(
            variables, input_ids, attention_mask, train=False, method=model.encode_text
        )

    def encode_image(variables, images):
        return {"embedding": image_out(variables, images)["image_feats"]}

    def encode_text(variables, input_ids, attention_mask):
        return {"embedding": text_out(variables, input_ids, attention_mask)["text_feats"]}

    def score_pairs(variables, images, input_ids, attention_mask):
        image_tokens = image_out(variables, images)["image_tokens"]
        text_tokens = text_out(variables, input_ids, attention_mask)["text_tokens"]
        out = model.apply(
            variables, image_tokens, text_tokens, attention_mask, train=False, method=model.match
        )
        return {"itm_logit": out["itm_logits"][:, 1]}

    return {
        "encode_image": Encoder(encode_image, [image], "ITC image feature, unit L2"),
        "encode_text": Encoder(encode_text, text, "ITC text feature, unit L2"),
        "score_pairs": Encoder(score_pairs, [image, *text], "class-1 ITM logit per pair"),
    }


def export_preprocessing(config: Any, info: TrainDataInfo) -> dict[str, Any]:
    """Host-side facts: image size and resize, and how a query becomes WordPiece ids (the
    test captions' cleaning, aptm §1.5) with the run's vocab.txt; `rerank_k` candidates go
    to the second stage (the run's `eval.k_test`)."""
    del info
    return {
        "image_size": list(config.data.image_size),
        "resize": "bicubic_pil",
        "text_tokenizer": "wordpiece",
        "max_tokens": int(config.data.max_tokens),
        "max_words": int(config.data.max_words),
        "alphanumeric_only": bool(config.data.clean_test),
        "rerank_k": int(config.eval.k_test),
    }
