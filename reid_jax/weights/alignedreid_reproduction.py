"""The AlignedReID re-production's `Model` -> `models/alignedreid/model.py` variables.

PyTorch (aligned_reid/model/Model.py)        Flax (under model_0/ of the task's module)
  base.*  (torchvision ResNet-50 names)        backbone/...
  local_conv.weight [c, C, 1, 1], .bias [c]    local_conv/kernel [C, c], bias
  local_bn.*                                   local_bn/{scale, bias}, batch_stats mean/var
  fc.weight [N, C], fc.bias [N]                classifier/kernel [C, N], bias (when trained
                                               with the ID loss; otherwise kept fresh)
Files: a bare model state dict (`model_weight.pth`) or the training checkpoint
`{'state_dicts': [model, optimizer], 'ep', 'scores'}`; mutual training (train_ml.py) saves
`[model_1 .. model_M, optimizer_1 .. optimizer_M]`, which fills `model_0 .. model_{M-1}` and
sets `model.num_models = M`. DataParallel's 'module.' is removed by the reader.
"""

from __future__ import annotations

import itertools

import numpy as np

from reid_jax.weights.mapping import (
    Rule,
    bn_rules,
    linear_kernel,
    pointwise_kernel,
    torchvision_resnet_rules,
)
from reid_jax.weights.readers import Checkpoint, WeightsError

OPTIONAL = ("classifier/",)


def model_tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The model state dicts of a file as 'model_{i}.<name>' (optimizer states left out)."""
    if not any(name.startswith("state_dicts.") for name in checkpoint.tensors):
        return {f"model_0.{k}": v for k, v in checkpoint.tensors.items()}
    tensors = {}
    # Models come first in 'state_dicts'; the optimizers after them hold no 'base.*' names.
    for index in itertools.count():
        state = checkpoint.sub(f"state_dicts.{index}.")
        if not any(name.startswith("base.") for name in state):
            break
        tensors.update({f"model_{index}.{k}": v for k, v in state.items()})
    if not tensors:
        raise WeightsError(f"{checkpoint.path}: 'state_dicts' holds no model (no 'base.*' names)")
    return tensors


def rules(num_models: int) -> list[Rule]:
    """The name map of `num_models` re-production models into `model_0 .. model_{M-1}`."""
    rules = []
    for index in range(num_models):
        source, target = rf"model_{index}\.", f"model_{index}/"
        rules += [
            *torchvision_resnet_rules(rf"{source}base\.", f"{target}backbone/"),
            Rule(
                rf"{source}local_conv\.weight",
                f"params/{target}local_conv/kernel",
                pointwise_kernel,
            ),
            Rule(rf"{source}local_conv\.bias", f"params/{target}local_conv/bias"),
            *bn_rules(rf"{source}local_bn", f"{target}local_bn"),
            Rule(rf"{source}fc\.weight", f"params/{target}classifier/kernel", linear_kernel),
            Rule(rf"{source}fc\.bias", f"params/{target}classifier/bias"),
        ]
    return rules


def sizes(tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """Model sizes the checkpoint fixes: num_models M, local_dim c, num_classes N (0 without
    fc)."""
    return {
        "num_models": len({name.split(".", 1)[0] for name in tensors}),
        "local_dim": int(tensors["model_0.local_conv.weight"].shape[0]),
        "num_classes": (
            int(tensors["model_0.fc.weight"].shape[0]) if "model_0.fc.weight" in tensors else 0
        ),
    }
