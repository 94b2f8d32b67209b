"""torchvision ResNet-18/34/50 ImageNet state dicts -> `models/backbones/resnet.py` variables.

The name map is the one `backbones/resnet.py` documents; the ImageNet classifier (fc) is
dropped. Used for `config.model.pretrained_trunk` and `reid-jax import-weights --kind
torchvision_resnet` (a run folder whose trunk is ImageNet and whose heads are fresh).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reid_jax.weights.mapping import Rule, apply_rules, torchvision_resnet_rules
from reid_jax.weights.readers import Checkpoint


def trunk_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The ResNet state dict of a file: a bare torchvision state dict, or one nested under
    'state_dict' / 'model'."""
    for prefix in ("state_dict.", "model."):
        nested = checkpoint.sub(prefix)
        if nested:
            return nested
    return dict(checkpoint.tensors)


def rules(target: str = "") -> list[Rule]:
    """The torchvision ResNet name map into a Flax trunk at `target` (e.g. 'backbone/')."""
    return torchvision_resnet_rules("", target)


def convert(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], source: str
) -> dict[str, np.ndarray]:
    """torchvision names -> flat trunk variables ('params/conv1/kernel', 'batch_stats/...').

    Args:
      tensors: the state dict.
      expected: flat shapes of the Flax ResNet's variables (no prefix).
      source: file name for errors.

    Raises:
      WeightsError: unused tensors, unfilled parameters or shape mismatches (by name).
    """
    return apply_rules(tensors, rules(), expected, source)
