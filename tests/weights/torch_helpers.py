"""Shared by the parity tests: non-trivial BatchNorm statistics and Flax variable shapes."""

import jax
import numpy as np
import torch

from reid_jax.weights.flat import flatten_shapes


def randomise_batch_norms(module: torch.nn.Module, calibration: tuple, seed: int = 0) -> None:
    """Gives every BatchNorm non-trivial affine parameters and running statistics.

    The running statistics are first measured on `calibration` inputs (so activations stay
    O(1) through a deep random network, where a float32 comparison to 1e-4 is meaningful) and
    then perturbed, so eval mode depends on all four tensors of every BatchNorm.

    Args:
      module: the PyTorch network (left in eval mode).
      calibration: positional inputs of one forward pass.
      seed: perturbation seed.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for layer in norms:
            size = layer.num_features
            layer.weight.copy_(0.2 + 0.3 * torch.rand(size, generator=generator))
            layer.bias.copy_(0.1 * torch.randn(size, generator=generator))
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: the calibration batch's statistics
        module.train()
        module(*calibration)
        for layer in norms:
            size = layer.num_features
            layer.running_mean.add_(0.05 * torch.randn(size, generator=generator))
            layer.running_var.mul_(0.9 + 0.2 * torch.rand(size, generator=generator))
            layer.momentum = 0.1
    module.eval()


def variable_shapes(model, *inputs, **kwargs) -> dict[str, tuple[int, ...]]:
    """Flat 'params/...' / 'batch_stats/...' -> shape of a Flax module's variables."""
    shapes = jax.eval_shape(lambda key: model.init(key, *inputs, **kwargs), jax.random.key(0))
    return flatten_shapes(shapes)


def to_nhwc(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] torch -> [B, H, W, C] NumPy."""
    return images.permute(0, 2, 3, 1).numpy()
