"""APTM objective terms of one batch (aptm §4), for `tasks/aptm.py`'s `loss_fn`.

Each image is encoded once and reused by every term; the terms named in `config.loss.weights`
are computed, unweighted (`aptm.loss_fn` applies the weights, §4.6). Per-GPU terms work on
groups of `config.loss.group_size` (§8.2).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.losses.contrastive import iac_loss, itc_loss
from reid_jax.losses.masked import mam_loss, mlm_loss, select_mam_images
from reid_jax.losses.matching import (
    iam_loss,
    itm_loss,
    itm_pair_indices,
    sample_iam_prompts,
    sample_itm_negatives,
)
from reid_jax.training.tasks.base import TrainDataInfo

TERMS = ("itc", "itm", "mlm", "itc_eda", "itm_eda", "iac", "iam", "mam")
ATTRIBUTE_TERMS = ("iac", "iam", "mam")  # the only terms of attribute images (no captions)
IAM_PROMPTS = 5  # aptm §4.5: prompts drawn per group and step


def _itm_term(
    apply,
    image: dict,
    text: dict,
    mask: jax.Array,
    labels: jax.Array,
    temp: jax.Array,
    *,
    key: jax.Array,
    rng: jax.Array,
    group_size: int,
) -> jax.Array:
    """ITM over B positives and 2B sampled negatives (aptm §4.2)."""
    v, t = image["image_feats"], text["text_feats"]
    sim_i2t = jnp.einsum("bd,nd->bn", v, t, precision="highest") / temp
    neg_text, neg_image, text_valid, image_valid = sample_itm_negatives(
        sim_i2t, sim_i2t.T, labels, key=key, group_size=group_size
    )
    text_index, image_index = itm_pair_indices(neg_text, neg_image)
    out = apply(
        "match",
        image["image_tokens"][image_index],
        text["text_tokens"][text_index],
        mask[text_index],
        rng=rng,
    )
    return itm_loss(
        out["itm_logits"], group_size=group_size, image_valid=image_valid, text_valid=text_valid
    )


def _attribute_terms(
    apply,
    image: dict,
    batch: dict,
    temp: jax.Array,
    *,
    keys: jax.Array,
    config: Any,
    info: TrainDataInfo,
) -> dict[str, jax.Array]:
    """IAC, IAM and MAM over the attribute prompt set (aptm §4.5)."""
    loss = config.loss
    group_size, eps = loss.group_size, loss.label_smoothing
    prompt_ids = jnp.asarray(np.asarray(info.extras["prompt_ids"], np.int32))
    prompt_mask = (prompt_ids != info.extras["pad_id"]).astype(jnp.int32)
    attributes = batch["attributes"]
    batch_size, num_prompts = attributes.shape[0], prompt_ids.shape[0]
    groups = batch_size // group_size
    terms = {}
    prompts = apply("encode_text", prompt_ids, prompt_mask, rng=keys[0])
    if "iac" in loss.weights:
        terms["iac"] = iac_loss(
            image["image_feats"],
            prompts["text_feats"],
            attributes,
            temp,
            group_size=group_size,
            label_smoothing=eps,
        )
    if "iam" in loss.weights:
        chosen = sample_iam_prompts(
            key=keys[1], num_prompts=num_prompts, num_groups=groups, num_selected=IAM_PROMPTS
        )
        per_pair = jnp.repeat(chosen, group_size, axis=0).reshape(-1)  # [B * S], b-major
        out = apply(
            "match",
            jnp.repeat(image["image_tokens"], IAM_PROMPTS, axis=0),
            prompts["text_tokens"][per_pair],
            prompt_mask[per_pair],
            rng=keys[2],
        )
        terms["iam"] = iam_loss(
            out["itm_logits"].reshape(batch_size, IAM_PROMPTS, 2),
            chosen,
            attributes,
            label_smoothing=eps,
        )
    if "mam" in loss.weights:
        image_index, valid = select_mam_images(attributes, key=keys[3], group_size=group_size)
        first = jnp.arange(groups) * group_size  # the group's masked prompt set (one per GPU)
        ids = batch["mam_ids"][first].reshape(groups * num_prompts, -1)
        positions = batch["mam_positions"][first].reshape(groups * num_prompts, -1)
        labels = batch["mam_labels"][first]
        out = apply(
            "masked_lm",
            ids,
            jnp.tile(prompt_mask, (groups, 1)),
            image["image_tokens"][image_index.reshape(-1)],
            positions,
            rng=keys[4],
        )
        logits = out["mlm_logits"].reshape(*labels.shape, -1)
        terms["mam"] = mam_loss(logits, labels, valid)
    return terms


def loss_terms(
    model: nn.Module,
    params: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    config: Any,
    info: TrainDataInfo,
) -> dict[str, jax.Array]:
    """The unweighted APTM terms named in `config.loss.weights`, each [] float32."""
    loss = config.loss
    keys = jax.random.split(key, 16)
    batch = {name: jnp.asarray(value) for name, value in batch.items()}

    def apply(method: str, *args, rng: jax.Array):
        return model.apply(
            {"params": params},
            *args,
            train=True,
            rngs={"dropout": rng},
            method=getattr(model, method),
        )

    temp = model.apply({"params": params}, method=model.temperature)
    image = apply("encode_image", batch["image"], rng=keys[0])
    terms: dict[str, jax.Array] = {}
    if any(t in loss.weights for t in ATTRIBUTE_TERMS):
        terms.update(
            _attribute_terms(apply, image, batch, temp, keys=keys[8:], config=config, info=info)
        )
    if set(loss.weights) <= set(ATTRIBUTE_TERMS):  # attribute images: no captions
        return terms
    labels, mask = batch["label"], batch["attention_mask"]
    text = apply("encode_text", batch["input_ids"], mask, rng=keys[1])
    itc = lambda t: itc_loss(  # noqa: E731
        image["image_feats"],
        t["text_feats"],
        labels,
        temp,
        gradient_scale=loss.itc_gradient_scale,
        num_reference_devices=loss.reference_devices,
    )
    if "itc" in loss.weights:
        terms["itc"] = itc(text)
    if "itm" in loss.weights:
        terms["itm"] = _itm_term(
            apply,
            image,
            text,
            mask,
            labels,
            temp,
            key=keys[2],
            rng=keys[3],
            group_size=loss.group_size,
        )
    if "mlm" in loss.weights:
        out = apply(
            "masked_lm",
            batch["mlm_ids"],
            mask,
            image["image_tokens"],
            batch["mlm_positions"],
            rng=keys[4],
        )
        terms["mlm"] = mlm_loss(out["mlm_logits"], batch["mlm_labels"], group_size=loss.group_size)
    if "itc_eda" in loss.weights or "itm_eda" in loss.weights:
        eda = apply("encode_text", batch["eda_ids"], batch["eda_mask"], rng=keys[5])
        if "itc_eda" in loss.weights:
            terms["itc_eda"] = itc(eda)
        if "itm_eda" in loss.weights:
            terms["itm_eda"] = _itm_term(
                apply,
                image,
                eda,
                batch["eda_mask"],
                labels,
                temp,
                key=keys[6],
                rng=keys[7],
                group_size=loss.group_size,
            )
    return terms
