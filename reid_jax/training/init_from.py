"""Start a run from existing weights (`config.init_from`): load what matches, report the rest.

Sources:
  * a run folder (its latest checkpoint in `checkpoints/`);
  * a checkpoint folder: a step folder (`RUN/checkpoints/1200`), or a folder of steps such as
    `RUN/best` or `RUN/checkpoints` (its latest step);
  * a converted weights file (`.npz`, `reid_jax.weights.flat` layout), e.g. written by
    `reid-jax import-weights`.
Only model variables ('params', 'batch_stats') are read; the optimizer state always starts
fresh. Source names are '/'-joined paths with the collection first ('params/backbone/conv1/
kernel') and pass through `config.init_from_rules`, ordered (regex, replacement) pairs: the
first rule whose regex matches a name rewrites it with `re.sub` (a rule mapping a name to ''
drops it). A mapped name loads when the fresh model has it with the same shape; everything
else is reported: 'new' (kept from the fresh initialisation), 'unused' (in the source only),
'mismatched' (same name, other shape; kept from initialisation). With
`config.init_from_strict` anything but 'loaded' is an error listing the paths.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reid_jax.training import checkpoint
from reid_jax.weights import flat as flat_weights

COLLECTIONS = ("params", "batch_stats")


class InitFromError(ValueError):
    """`config.init_from` cannot be used (missing source, strict mismatch, name clash)."""


@dataclasses.dataclass
class LoadReport:
    """What a weights load did, by parameter path.

    Attributes:
      source: the source as resolved (file or checkpoint folder).
      loaded: target paths filled from the source.
      new: target paths absent from the source (fresh initialisation kept).
      unused: source paths (after the rules) the model does not have.
      mismatched: path -> (source shape, model shape) for same-name, other-shape entries.
      sizes: path -> number of values, for every path above (model side where both exist).
    """

    source: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    new: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=dict
    )
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        """One line per path that did not load (empty when everything loaded)."""
        lines = [f"new (not in the source): {p}" for p in self.new]
        lines += [f"unused (not in the model): {p}" for p in self.unused]
        lines += [
            f"shape mismatch: {p} source {list(s)} vs model {list(m)}"
            for p, (s, m) in self.mismatched.items()
        ]
        return lines

    def summary(self, max_paths: int = 8) -> str:
        """A small table of counts and value totals per category, with example paths."""
        rows = [
            ("loaded", "", self.loaded),
            ("new (kept from init)", "new", self.new),
            ("unused in the source", "unused", self.unused),
            ("shape mismatches", "mismatch", list(self.mismatched)),
        ]
        lines = [f"init_from {self.source}:"]
        for label, _, paths in rows:
            total = sum(self.sizes.get(p, 0) for p in paths)
            lines.append(f"  {label:<22} {len(paths):>6} arrays {total:>14,} values")
        for _, tag, paths in rows[1:]:
            for path in paths[:max_paths]:
                detail = self.mismatched.get(path)
                suffix = f" source {list(detail[0])} vs model {list(detail[1])}" if detail else ""
                lines.append(f"    {tag}: {path}{suffix}")
            if len(paths) > max_paths:
                lines.append(f"    ... and {len(paths) - max_paths} more")
        return "\n".join(lines)


def resolve_source(source: str | os.PathLike) -> Path:
    """The weights file or checkpoint step folder a `config.init_from` value names.

    Raises:
      InitFromError: the path does not exist or holds no checkpoint (message names it).
    """
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".npz":
            raise InitFromError(
                f"config.init_from: {path} is not a converted weights file (.npz); convert "
                "PyTorch checkpoints first with `reid-jax import-weights`"
            )
        return path
    if not path.is_dir():
        raise InitFromError(f"config.init_from: {path} does not exist")
    if checkpoint.is_step_folder(path):
        return path
    for folder in (path / checkpoint.CHECKPOINT_DIR, path):
        step_folder = checkpoint.latest_step_folder(folder)
        if step_folder is not None:
            return step_folder
    raise InitFromError(f"config.init_from: {path} holds no checkpoint (run folder or step folder)")


def read_source(source: str | os.PathLike) -> tuple[dict[str, np.ndarray], Path]:
    """Flat 'collection/path' -> array of a source's model variables.

    Returns:
      (arrays, resolved path).
    """
    path = resolve_source(source)
    if path.is_file():
        arrays, _ = flat_weights.load_weights_npz(path)
    else:
        arrays = flat_weights.flatten_variables(checkpoint.restore_variables(path))
    return arrays, path


def map_names(
    arrays: Mapping[str, np.ndarray], rules: Sequence[Sequence[str]]
) -> dict[str, np.ndarray]:
    """Applies the ordered (regex, replacement) rules to every source name.

    Raises:
      InitFromError: two source names map to the same name.
    """
    compiled = [(re.compile(regex), replacement) for regex, replacement in rules]
    mapped: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for name, value in arrays.items():
        new_name = name
        for pattern, replacement in compiled:
            if pattern.search(name):
                new_name = pattern.sub(replacement, name, count=1)
                break
        if not new_name:
            continue
        if new_name in mapped:
            raise InitFromError(
                f"config.init_from_rules: '{origin[new_name]}' and '{name}' both map to "
                f"'{new_name}'"
            )
        mapped[new_name], origin[new_name] = value, name
    return mapped


def merge_into(
    target: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray], source_name: str
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Fills target arrays from same-name, same-shape source arrays (cast to the target dtype).

    Args:
      target: flat fresh model variables ('params/...', 'batch_stats/...').
      source: flat source variables, names already mapped.
      source_name: shown in the report.

    Returns:
      (merged flat variables, report).
    """
    report = LoadReport(source=source_name)
    merged = dict(target)
    for name, value in target.items():
        report.sizes[name] = int(np.size(value))
        if name not in source:
            report.new.append(name)
        elif tuple(np.shape(source[name])) != tuple(np.shape(value)):
            report.mismatched[name] = (tuple(np.shape(source[name])), tuple(np.shape(value)))
        else:
            merged[name] = np.asarray(source[name]).astype(np.asarray(value).dtype)
            report.loaded.append(name)
    for name, value in source.items():
        if name not in target and name.split("/", 1)[0] in COLLECTIONS:
            report.unused.append(name)
            report.sizes[name] = int(np.size(value))
    return merged, report


def load_initial_variables(
    variables: Mapping[str, Any], config: Any
) -> tuple[dict[str, Any], LoadReport]:
    """Fresh model variables with everything `config.init_from` provides loaded over them.

    Args:
      variables: the fresh initialisation (host or device arrays), {'params', 'batch_stats'?}.
      config: the run config (`init_from`, `init_from_rules`, `init_from_strict`).

    Returns:
      (nested variables as NumPy arrays, report).

    Raises:
      InitFromError: bad source, a name clash, or (strict) anything not loaded.
    """
    arrays, path = read_source(config.init_from)
    mapped = map_names(arrays, config.init_from_rules)
    merged, report = merge_into(flat_weights.flatten_variables(variables), mapped, str(path))
    if config.init_from_strict and report.problems():
        raise InitFromError(
            f"config.init_from_strict: {path} does not fill the model exactly: "
            + "; ".join(report.problems())
        )
    return flat_weights.unflatten_variables(merged), report


def load_pretrained_trunk(
    variables: Mapping[str, Any], path: str | os.PathLike, prefixes: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """Loads an ImageNet ResNet state dict (torchvision names; .pth, .safetensors or .npz)
    into every trunk of a model.

    Args:
      variables: fresh model variables.
      path: the trunk file.
      prefixes: Flax paths of the trunks, e.g. ('backbone/',) or ('model_0/backbone/', ...).

    Returns:
      (nested variables as NumPy arrays, the Flax paths that were loaded).

    Raises:
      WeightsError: the file does not fill a trunk exactly (e.g. another depth or width).
    """
    from reid_jax.weights import read_checkpoint, torchvision_resnet
    from reid_jax.weights.mapping import apply_rules

    tensors = torchvision_resnet.trunk_tensors(read_checkpoint(path))
    flat = flat_weights.flatten_variables(variables)
    loaded: list[str] = []
    for prefix in prefixes:
        expected = {
            name: tuple(np.shape(value))
            for name, value in flat.items()
            if name.split("/", 1)[1].startswith(prefix)
        }
        converted = apply_rules(tensors, torchvision_resnet.rules(prefix), expected, str(path))
        flat.update(converted)
        loaded += sorted(converted)
    return flat_weights.unflatten_variables(flat), loaded
