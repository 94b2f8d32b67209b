"""The official SSAN network (and its saved ID classifiers) -> `models/ssan/model.py`.

PyTorch (src/model/model.py, text_feature_extract.py)   Flax
  ImageExtract.{0,1,4-7}.* (torchvision ResNet-50       backbone/... (conv1, bn1, layer1-4)
    children 0 conv1, 1 bn1, 4-7 layer1-4)
  TextExtract.embedding_global.weight [V, E]           global_embedding [V, E]
  TextExtract.embedding_local.weight [V, E]            local_embedding [V, E]
  TextExtract.lstm.weight_ih_l0(_reverse) [4H, E]      bilstm/input_kernel [2, E, 4H]
  TextExtract.lstm.weight_hh_l0(_reverse) [4H, H]      bilstm/recurrent_kernel [2, H, 4H]
  conv_word_classifier.0.weight [K, H, 1, 1]           word_attention/kernel [H, K]
  conv_global.block.0.weight [D, H, 1, 1]              conv_global/kernel [H, D]
  conv_local.{k}.block.0.weight [D, H, 1, 1]           conv_local/kernel [K, H, D]
  non_local_net.part_sim_conv.{k}.block.0.weight       relation/part/kernel [K, D, R]
  non_local_net.cur_sim_conv.{k}.block.0.weight        relation/current/kernel [K, D, R]
  non_local_net.up_dim_conv.{k}.block.0.weight         relation/up/kernel [K, R, D]
  non_local_net.up_dim_conv.{k}.block.1.*  (BN(D))     relation/up_bn/* [K, D]
  non_local_net.conv_local_att.{k}.block.0.weight      relation/output/kernel [K, D, R]
  WL.W.{k}.block.weight [C, D], .bias [C]              classifier_parts/{kernel [K, D, C], bias}
  WN.W.{k}.block.weight [C, R], .bias [C]              classifier_relation/{kernel, bias}
The global classifier is never saved by the official training script (only 'WN' and 'WL'),
so `classifier_global` keeps its fresh initialisation; it plays no part in retrieval.
Files: `best.pth.tar` = {'network', 'WN', 'WL', 'epoch', 'test_best'}, or a bare network
state dict.
"""

from __future__ import annotations

import re

import numpy as np

from reid_jax.weights.mapping import (
    Rule,
    keep,
    linear_kernel,
    pointwise_kernel,
    torchvision_resnet_rules,
)
from reid_jax.weights.readers import Checkpoint

OPTIONAL = ("classifier_global/", "classifier_parts/", "classifier_relation/")
# nn.Sequential(*resnet50.children()[:-2]): 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4.
_TRUNK_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3",
                   "7": "layer4"}  # fmt: skip


def model_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The network and classifier tensors of a file, trunk children renamed to torchvision's
    names ('trunk.conv1.weight', 'trunk.layer1.0.conv1.weight', ...)."""
    network = checkpoint.sub("network.") or dict(checkpoint.tensors)
    tensors = {}
    for name, value in network.items():
        match = re.fullmatch(r"ImageExtract\.(\d+)\.(.*)", name)
        if match and match.group(1) in _TRUNK_CHILDREN:
            name = f"trunk.{_TRUNK_CHILDREN[match.group(1)]}.{match.group(2)}"
        tensors[name] = value
    for group in ("WL", "WN"):
        tensors.update({f"{group}.{k}": v for k, v in checkpoint.sub(f"{group}.").items()})
    return tensors


def rules() -> list[Rule]:
    """The official name map."""
    lstm = r"TextExtract\.lstm\.weight_{}_l0"
    part = r"non_local_net\.{}\.(\d+)\.block\.0\.weight"
    return [
        *torchvision_resnet_rules(r"trunk\.", "backbone/"),
        Rule(r"TextExtract\.embedding_global\.weight", "params/global_embedding", keep),
        Rule(r"TextExtract\.embedding_local\.weight", "params/local_embedding", keep),
        Rule(lstm.format("ih"), "params/bilstm/input_kernel@0", linear_kernel),
        Rule(lstm.format("ih") + "_reverse", "params/bilstm/input_kernel@1", linear_kernel),
        Rule(lstm.format("hh"), "params/bilstm/recurrent_kernel@0", linear_kernel),
        Rule(lstm.format("hh") + "_reverse", "params/bilstm/recurrent_kernel@1", linear_kernel),
        Rule(r"conv_word_classifier\.0\.weight", "params/word_attention/kernel", pointwise_kernel),
        Rule(r"conv_global\.block\.0\.weight", "params/conv_global/kernel", pointwise_kernel),
        Rule(
            r"conv_local\.(\d+)\.block\.0\.weight", r"params/conv_local/kernel@\1", pointwise_kernel
        ),
        Rule(part.format("part_sim_conv"), r"params/relation/part/kernel@\1", pointwise_kernel),
        Rule(part.format("cur_sim_conv"), r"params/relation/current/kernel@\1", pointwise_kernel),
        Rule(part.format("up_dim_conv"), r"params/relation/up/kernel@\1", pointwise_kernel),
        Rule(part.format("conv_local_att"), r"params/relation/output/kernel@\1", pointwise_kernel),
        *[
            Rule(rf"non_local_net\.up_dim_conv\.(\d+)\.block\.1\.{torch_name}", target)
            for torch_name, target in (
                ("weight", r"params/relation/up_bn/scale@\1"),
                ("bias", r"params/relation/up_bn/bias@\1"),
                ("running_mean", r"batch_stats/relation/up_bn/mean@\1"),
                ("running_var", r"batch_stats/relation/up_bn/var@\1"),
                ("num_batches_tracked", ""),
            )
        ],
        Rule(r"WL\.W\.(\d+)\.block\.weight", r"params/classifier_parts/kernel@\1", linear_kernel),
        Rule(r"WL\.W\.(\d+)\.block\.bias", r"params/classifier_parts/bias@\1"),
        Rule(
            r"WN\.W\.(\d+)\.block\.weight", r"params/classifier_relation/kernel@\1", linear_kernel
        ),
        Rule(r"WN\.W\.(\d+)\.block\.bias", r"params/classifier_relation/bias@\1"),
    ]


def sizes(tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """Model sizes the checkpoint fixes (config fields of `config.model`, plus num_classes)."""
    vocab_size, embed_dim = tensors["TextExtract.embedding_global.weight"].shape
    feature_dim = tensors["conv_global.block.0.weight"].shape[0]
    num_parts = len([k for k in tensors if re.fullmatch(r"conv_local\.\d+\.block\.0\.weight", k)])
    relation_dim = tensors["non_local_net.part_sim_conv.0.block.0.weight"].shape[0]
    classes = tensors.get("WL.W.0.block.weight")
    return {
        "vocab_size": int(vocab_size),
        "embed_dim": int(embed_dim),
        "lstm_hidden": int(tensors["TextExtract.lstm.weight_hh_l0"].shape[1]),
        "feature_dim": int(feature_dim),
        "num_parts": int(num_parts),
        "relation_dim": int(relation_dim),
        "num_classes": int(classes.shape[0]) if classes is not None else 0,
    }
