"""Weights in: PyTorch and other checkpoints converted into this project's models.

`KINDS` names every converter (an explicit dict, no import strings):
  torchvision_resnet        ImageNet ResNet-18/34/50 -> the task's trunk (heads fresh)
  ssan_official             the official SSAN network + saved ID classifiers -> SSAN
  alignedreid_reproduction  the re-production's Model(s) -> AlignedReID (model_0 ..)
  aptm_official             an official APTM checkpoint ({'model', 'config'}) -> APTM, whole
  hf_bert                   a Hugging Face BERT (bert-base-uncased, MiniLM) -> APTM's text
                            encoder: embeddings, self-attention and FFN of every layer, the MLM
                            head if the file has one (cross-attention and the rest fresh);
                            the file sets the vocabulary, text widths and layer count
  swin_microsoft            a Microsoft-layout Swin (ImageNet-22K Swin-B) -> APTM's image
                            encoder, relative-position tables resampled to the model's windows
`import_weights(kind, path, config)` returns the task's model (sizes the config cannot know,
such as the number of identities or the vocabulary size, taken from the checkpoint) and its
variables; `reid-jax import-weights` writes them as a run folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from reid_jax.weights import (
    alignedreid_reproduction,
    aptm_official,
    hf_bert,
    ssan_official,
    swin_microsoft,
    torchvision_resnet,
)
from reid_jax.weights.flat import flatten_shapes, unflatten_variables
from reid_jax.weights.mapping import Rule, apply_rules
from reid_jax.weights.readers import Checkpoint, WeightsError, read_checkpoint

__all__ = [
    "KINDS",
    "Checkpoint",
    "Imported",
    "WeightsError",
    "convert_checkpoint",
    "import_weights",
    "read_checkpoint",
]


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one family of checkpoints enters a task.

    Attributes:
      task: the `config.task` it fills.
      tensors: file -> the state dict to convert.
      sizes: state dict -> config.model fields (and 'num_classes') it fixes.
      rules: config -> the name map.
      required: Flax path -> whether the file must fill it (others: filled if present).
    """

    task: str
    tensors: Callable[[Checkpoint], dict[str, np.ndarray]]
    sizes: Callable[[dict[str, np.ndarray]], dict[str, int]]
    rules: Callable[[Any], list[Rule]]
    required: Callable[[str], bool]


def _under(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda path: path.split("/", 1)[1].startswith(prefixes)


def _trunk_sizes(tensors: dict[str, np.ndarray]) -> dict[str, int]:
    return {"num_classes": 0}


def _trunk_rules(config: Any) -> list[Rule]:
    if config.task == "alignedreid":
        targets = [f"model_{i}/backbone/" for i in range(config.model.num_models)]
        if len(targets) > 1:
            raise WeightsError("torchvision_resnet import fills one model; use model.num_models=1")
        return torchvision_resnet.rules(targets[0])
    return torchvision_resnet.rules("backbone/")


def _no_classes(sizes: Callable[[dict[str, np.ndarray]], dict]) -> Callable[..., dict]:
    return lambda tensors: {**sizes(tensors), "num_classes": 0}


def _aptm_swin_rules(config: Any) -> list[Rule]:
    windows = swin_microsoft.stage_windows(
        config.data.image_size, config.model.swin_window_size, len(config.model.swin_depths)
    )
    return swin_microsoft.rules("", "vision_encoder/", windows)


def _bert_layer_block(path: str) -> bool:
    """Embeddings and self-attention / FFN of the APTM text encoder (not cross-attention)."""
    return path.startswith("params/text_encoder/bert/") and "/crossattention/" not in path


KINDS: dict[str, Kind] = {
    "torchvision_resnet": Kind(
        task="",  # any task with a ResNet trunk
        tensors=torchvision_resnet.trunk_tensors,
        sizes=_trunk_sizes,
        rules=_trunk_rules,
        required=lambda path: "backbone/" in path,
    ),
    "ssan_official": Kind(
        task="ssan",
        tensors=ssan_official.model_tensors,
        sizes=ssan_official.sizes,
        rules=lambda config: ssan_official.rules(),
        required=lambda path: not _under(ssan_official.OPTIONAL)(path),
    ),
    "alignedreid_reproduction": Kind(
        task="alignedreid",
        tensors=alignedreid_reproduction.model_tensors,
        sizes=alignedreid_reproduction.sizes,
        rules=lambda config: alignedreid_reproduction.rules(config.model.num_models),
        required=lambda path: (
            not path.split("/", 2)[2].startswith(alignedreid_reproduction.OPTIONAL)
        ),
    ),
    "aptm_official": Kind(
        task="aptm",
        tensors=aptm_official.model_tensors,
        sizes=_no_classes(aptm_official.sizes),
        rules=lambda config: aptm_official.rules(),
        required=lambda path: True,
    ),
    "hf_bert": Kind(
        task="aptm",
        tensors=hf_bert.text_tensors,
        sizes=_no_classes(hf_bert.sizes),
        rules=lambda config: hf_bert.aptm_rules("text_encoder/"),
        required=_bert_layer_block,
    ),
    "swin_microsoft": Kind(
        task="aptm",
        tensors=swin_microsoft.model_tensors,
        sizes=_no_classes(swin_microsoft.sizes),
        rules=_aptm_swin_rules,
        required=lambda path: path.startswith("params/vision_encoder/"),
    ),
}


@dataclasses.dataclass
class Imported:
    """A converted checkpoint.

    Attributes:
      model: the task's flax module, sized by the checkpoint.
      variables: {'params', 'batch_stats'} as NumPy arrays.
      config: the config as used (model sizes from the checkpoint).
      info: the data facts the model was built with (num_classes from the checkpoint).
      kept_fresh: Flax paths the file did not fill (fresh initialisation kept).
      metadata: the file's top-level non-tensor values (epoch, scores).
    """

    model: Any
    variables: dict[str, Any]
    config: Any
    info: Any
    kept_fresh: list[str]
    metadata: dict[str, Any]


def import_weights(kind: str, path: str | os.PathLike, config: Any) -> tuple[Any, dict[str, Any]]:
    """Converts a checkpoint into the task model `config` describes.

    Args:
      kind: a key of KINDS ('torchvision_resnet', 'ssan_official', 'alignedreid_reproduction',
        'aptm_official', 'hf_bert', 'swin_microsoft').
      path: the weights file (.pth / .pt / .pth.tar / .bin / .safetensors / .npz), or a Hugging
        Face model folder holding one.
      config: the task config; sizes the file fixes (identities, vocabulary, number of mutual
        models) override it in a copy (`convert_checkpoint` returns that copy too).

    Returns:
      (model, variables): the task's flax module and {'params', 'batch_stats'} NumPy trees
      shaped as its `init_variables` (checked with `jax.eval_shape`).
    """
    imported = convert_checkpoint(kind, path, config)
    return imported.model, imported.variables


def convert_checkpoint(kind: str, path: str | os.PathLike, config: Any) -> Imported:
    """Converts a checkpoint into the task model `config` describes.

    Args:
      kind: a key of KINDS.
      path: the weights file or a Hugging Face model folder.
      config: the task config; model sizes the checkpoint fixes override it (in a copy).

    Returns:
      The model, its variables and what was kept fresh.

    Raises:
      WeightsError: unknown kind, wrong task, or a file that does not fit (names listed).
    """
    from reid_jax.training.tasks import TASKS
    from reid_jax.training.tasks.base import TrainDataInfo

    if kind not in KINDS:
        raise WeightsError(f"--kind: unknown kind '{kind}', choose from {sorted(KINDS)}")
    spec = KINDS[kind]
    if spec.task and config.task != spec.task:
        raise WeightsError(
            f"--kind {kind} fills '{spec.task}' models, the config is '{config.task}'"
        )
    path = hf_bert.weights_file(path)
    checkpoint = read_checkpoint(path)
    tensors = spec.tensors(checkpoint)
    sizes = spec.sizes(tensors)
    num_classes = sizes.pop("num_classes") or 1
    unknown = sorted(field for field in sizes if field not in config.model)
    if unknown:  # never add fields silently: the converter and the task disagree
        raise WeightsError(f"--kind {kind}: config.model has no field(s) {unknown}")
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.update(sizes)
    task = TASKS[config.task]
    info = TrainDataInfo(num_examples=0, steps_per_epoch=1, num_classes=num_classes)
    model = task.create_model(config, info)
    key = jax.random.key(config.seed)
    shapes = flatten_shapes(
        jax.eval_shape(lambda k: task.init_variables(model, k, config=config), key)
    )
    required = {k: v for k, v in shapes.items() if spec.required(k)}
    optional = {k: v for k, v in shapes.items() if not spec.required(k)}
    # Checked against shapes first, so a file that does not fit fails before any compute.
    converted = apply_rules(tensors, spec.rules(config), required, str(path), optional)
    kept_fresh = sorted(set(shapes) - set(converted))
    return Imported(
        model=model,
        variables=unflatten_variables(
            {**_fresh_leaves(task, model, key, config, kept_fresh), **converted}
        ),
        config=config,
        info=info,
        kept_fresh=kept_fresh,
        # Top-level values only (epoch, scores): optimizer hyperparameters say nothing here.
        metadata={k: v for k, v in checkpoint.metadata.items() if "." not in k},
    )


def _fresh_leaves(task: Any, model: Any, key: jax.Array, config: Any, names: list[str]) -> dict:
    """The task's initial values of `names` only: XLA drops the initialisers of every other
    variable from the jitted program, so a full-size trunk is never initialised for nothing."""
    if not names:
        return {}

    def leaf(tree: Any, name: str) -> jax.Array:
        for part in name.split("/"):
            tree = tree[part]
        return tree

    def init(k: jax.Array) -> dict[str, jax.Array]:
        variables = task.init_variables(model, k, config=config)
        return {name: leaf(variables, name) for name in names}

    return jax.device_get(jax.jit(init)(key))
