"""Declarative PyTorch -> Flax name maps and the checks every converter shares.

A converter is a list of `Rule`s: a regex that must match a whole PyTorch name, the Flax path
it becomes ('params/...' or 'batch_stats/...', with regex groups as \\1, \\2 ...) and a layout
change. A target ending in '@N' (N an integer or group) is one slice of a stacked parameter:
the slices are stacked along a new first axis in index order (per-part heads, LSTM
directions). A target of '' drops the tensor (fc layers, num_batches_tracked).
`apply_rules` then checks that every tensor was used and, against the model's expected shapes,
that every parameter was filled with the right shape; violations are one `WeightsError`
listing the names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from reid_jax.weights.readers import WeightsError

Layout = Callable[[np.ndarray], np.ndarray]


def keep(x: np.ndarray) -> np.ndarray:
    """No layout change (biases, BatchNorm vectors, embedding tables)."""
    return x


def conv_kernel(x: np.ndarray) -> np.ndarray:
    """Conv2d weight [O, I, kh, kw] -> Flax Conv kernel [kh, kw, I, O]."""
    return np.transpose(x, (2, 3, 1, 0))


def pointwise_kernel(x: np.ndarray) -> np.ndarray:
    """1x1 Conv2d weight [O, I, 1, 1] -> Dense kernel [I, O]."""
    return np.transpose(x[:, :, 0, 0])


def linear_kernel(x: np.ndarray) -> np.ndarray:
    """Linear / LSTM weight [O, I] -> Dense kernel [I, O]."""
    return np.transpose(x)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One line of a name map.

    Attributes:
      source: regex matching a whole PyTorch name.
      target: Flax path template ('' drops the tensor; '...@index' stacks slices).
      layout: array transform from the PyTorch to the Flax layout.
    """

    source: str
    target: str
    layout: Layout = keep


def torchvision_resnet_rules(prefix: str, target: str) -> list[Rule]:
    """Rules for a torchvision ResNet trunk (see models/backbones/resnet.py for the names).

    Args:
      prefix: regex of the trunk's names before 'conv1' / 'layer1' (e.g. '' or 'base\\.').
      target: Flax prefix of the trunk ('backbone/' or '').
    """
    rules = [Rule(rf"{prefix}conv1\.weight", f"params/{target}conv1/kernel", conv_kernel)]
    rules += _bn_rules(rf"{prefix}bn1", f"{target}bn1")
    block = rf"{prefix}layer([1-4])\.(\d+)"
    rules.append(
        Rule(
            rf"{block}\.conv([1-3])\.weight",
            f"params/{target}layer\\1_\\2/conv\\3/kernel",
            conv_kernel,
        )
    )
    rules += _bn_rules(rf"{block}\.bn([1-3])", f"{target}layer\\1_\\2/bn\\3")
    rules.append(
        Rule(
            rf"{block}\.downsample\.0\.weight",
            f"params/{target}layer\\1_\\2/downsample_conv/kernel",
            conv_kernel,
        )
    )
    rules += _bn_rules(rf"{block}\.downsample\.1", f"{target}layer\\1_\\2/downsample_bn")
    rules.append(Rule(rf"{prefix}fc\.(weight|bias)", ""))  # the ImageNet classifier
    return rules


def _bn_rules(source: str, target: str) -> list[Rule]:
    return [
        Rule(rf"{source}\.weight", f"params/{target}/scale"),
        Rule(rf"{source}\.bias", f"params/{target}/bias"),
        Rule(rf"{source}\.running_mean", f"batch_stats/{target}/mean"),
        Rule(rf"{source}\.running_var", f"batch_stats/{target}/var"),
        Rule(rf"{source}\.num_batches_tracked", ""),
    ]


def bn_rules(source: str, target: str) -> list[Rule]:
    """The five tensors of a PyTorch BatchNorm into a Flax BatchNorm at `target`."""
    return _bn_rules(source, target)


def apply_rules(
    tensors: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    expected: Mapping[str, tuple[int, ...]],
    source: str,
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Converts PyTorch tensors with a name map and checks the result against the model.

    Args:
      tensors: PyTorch name -> array.
      rules: the converter's name map (first matching rule wins).
      expected: Flax path -> shape of every variable the model has ('params/...',
        'batch_stats/...').
      source: file name for error messages.
      optional: Flax path -> shape of variables the file may fill (ID classifiers); left out
        ones keep the model's initialisation.

    Returns:
      Flax path -> float32 array: every key of `expected` and those of `optional` the file has.

    Raises:
      WeightsError: listing unused tensors, unfilled parameters and shape mismatches.
    """
    compiled = [(re.compile(rule.source), rule) for rule in rules]
    converted: dict[str, np.ndarray] = {}
    stacked: dict[str, dict[int, np.ndarray]] = {}
    unused = []
    for name, value in tensors.items():
        found = next(
            ((m, rule) for pattern, rule in compiled if (m := pattern.fullmatch(name))), None
        )
        if found is None:
            unused.append(name)
            continue
        match, rule = found
        target = match.expand(rule.target)
        if not target:
            continue
        array = np.asarray(rule.layout(np.asarray(value)), np.float32)
        if "@" in target:
            path, index = target.split("@")
            stacked.setdefault(path, {})[int(index)] = array
        else:
            converted[target] = array
    for path, pieces in stacked.items():
        if sorted(pieces) != list(range(len(pieces))):
            raise WeightsError(f"{source}: slices {sorted(pieces)} of {path} are not 0..n-1")
        converted[path] = np.stack([pieces[i] for i in range(len(pieces))])
    problems = [f"unused tensor {name}" for name in unused]
    problems += [f"not filled: {path}" for path in expected if path not in converted]
    shapes = {**(optional or {}), **expected}
    problems += [f"no such parameter: {path}" for path in converted if path not in shapes]
    problems += [
        f"shape mismatch: {path} converted {list(converted[path].shape)} vs model {list(shape)}"
        for path, shape in shapes.items()
        if path in converted and tuple(converted[path].shape) != tuple(shape)
    ]
    if problems:
        shown = "; ".join(problems[:20])
        more = f"; ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise WeightsError(f"{source}: does not fit the model: {shown}{more}")
    return converted
