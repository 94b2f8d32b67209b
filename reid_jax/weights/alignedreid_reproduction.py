"""The AlignedReID re-production's `Model` -> `models/alignedreid/model.py` variables.

PyTorch (aligned_reid/model/Model.py)        Flax (under model_0/ of the task's module)
  base.*  (torchvision ResNet-50 names)        backbone/...
  local_conv.weight [c, C, 1, 1], .bias [c]    local_conv/kernel [C, c], bias
  local_bn.*                                   local_bn/{scale, bias}, batch_stats mean/var
  fc.weight [N, C], fc.bias [N]                classifier/kernel [C, N], bias (when trained
                                               with the ID loss; otherwise kept fresh)
Files: a bare model state dict (`model_weight.pth`) or the training checkpoint
`{'state_dicts': [model, optimizer], 'ep', 'scores'}`; DataParallel's 'module.' is removed by
the reader.
"""

from __future__ import annotations

import numpy as np

from reid_jax.weights.mapping import (
    Rule,
    bn_rules,
    linear_kernel,
    pointwise_kernel,
    torchvision_resnet_rules,
)
from reid_jax.weights.readers import Checkpoint

OPTIONAL = ("classifier/",)


def model_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The model state dict of a file (the first of 'state_dicts' when present)."""
    nested = checkpoint.sub("state_dicts.0.")
    return nested if nested else dict(checkpoint.tensors)


def rules(target: str) -> list[Rule]:
    """The name map into one AlignedReidModel at `target` (e.g. 'model_0/')."""
    return [
        *torchvision_resnet_rules(r"base\.", f"{target}backbone/"),
        Rule(r"local_conv\.weight", f"params/{target}local_conv/kernel", pointwise_kernel),
        Rule(r"local_conv\.bias", f"params/{target}local_conv/bias"),
        *bn_rules(r"local_bn", f"{target}local_bn"),
        Rule(r"fc\.weight", f"params/{target}classifier/kernel", linear_kernel),
        Rule(r"fc\.bias", f"params/{target}classifier/bias"),
    ]


def sizes(tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """Model sizes the checkpoint fixes: local_dim c, num_classes N (0 without fc)."""
    return {
        "local_dim": int(tensors["local_conv.weight"].shape[0]),
        "num_classes": int(tensors["fc.weight"].shape[0]) if "fc.weight" in tensors else 0,
    }
