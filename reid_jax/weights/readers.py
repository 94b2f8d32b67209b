"""Read weights files into a flat name -> NumPy array mapping, never executing code.

Formats: PyTorch `.pth` / `.pt` / `.pth.tar` / `.bin` (zip and legacy pickle; read with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers, so a file
that pickles a callable is refused), `.safetensors` and `.npz` (`allow_pickle=False`).

Nested containers are flattened with '.'-joined names, e.g. SSAN's `best.pth.tar`
`{'network': state_dict, 'WN': ..., 'WL': ..., 'epoch', 'test_best'}` gives
'network.ImageExtract.0.weight', 'WN.W.0.block.weight', ...; lists use their index
('state_dicts.0.base.conv1.weight'). Non-tensor values (epoch, scores) go to the metadata,
NumPy scalars and arrays among them as plain Python values: the weights-only load also accepts
NumPy's data rebuilders (SSAN saves its best R@1 as a np.float64), never other callables.
DataParallel's 'module.' prefix is removed from every name. Torch is needed only for PyTorch
files (`pip install 'reid_jax[convert]'`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

PYTORCH_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt")


class WeightsError(ValueError):
    """A weights file cannot be read or does not fit the model; the message names the file
    and the tensors."""


@dataclasses.dataclass
class Checkpoint:
    """Contents of a weights file.

    Attributes:
      path: the file.
      tensors: flat name -> array (float arrays as stored, e.g. float32; names '.'-joined).
      metadata: flat name -> plain value (int, float, str, bool) found beside the tensors.
    """

    path: Path
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any]

    def sub(self, prefix: str) -> dict[str, np.ndarray]:
        """Tensors under `prefix` ('network.'), with the prefix removed."""
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _strip_module(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "module")


def _flatten(tree: Any, prefix: str, tensors: dict, metadata: dict, to_numpy) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            _flatten(value, f"{prefix}{key}.", tensors, metadata, to_numpy)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            _flatten(value, f"{prefix}{index}.", tensors, metadata, to_numpy)
    else:
        name = _strip_module(prefix[:-1])
        array = to_numpy(tree)
        if array is not None:
            tensors[name] = array
        elif isinstance(tree, (np.generic, np.ndarray)):
            # NumPy values beside a state dict are scores (SSAN's test_best is a np.float64).
            metadata[name] = tree.tolist()
        elif isinstance(tree, (int, float, str, bool)) or tree is None:
            metadata[name] = tree


def _numpy_data_globals() -> list[Any]:
    """The NumPy names a weights-only load may resolve: rebuilders of scalars and arrays from
    their dtype and bytes (no code runs). Official checkpoints hold them: SSAN's best.pth.tar
    saves its best R@1 as a np.float64. Files written under NumPy 1 name numpy.core."""
    core = getattr(np, "_core", None) or np.core
    names = [np.dtype, np.ndarray]
    # Unpickling a dtype sets its state, which torch allows only for listed dtype classes.
    names += [type(np.dtype(code)) for code in "?bhilqBHILQefdgFD"]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names += [(core.multiarray.scalar, f"{module}.scalar")]
        names += [(core.multiarray._reconstruct, f"{module}._reconstruct")]
    return names


def _read_pytorch(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path}: reading PyTorch files needs torch: pip install 'reid_jax[convert]'"
        ) from None
    import pickle

    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"{path}: refused: the file holds more than tensors and plain containers "
            f"({_unsafe_names(torch, path, error)}); weights files are read without running "
            "code from them"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise WeightsError(f"{path}: not a readable PyTorch file ({error})") from None


def _unsafe_names(torch: Any, path: Path, error: Exception) -> str:
    """What a refused file would call, read from its pickle opcodes (never executed)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy files: torch's scanner reads zip archives only
        names = []
    if names:
        return "loading it would call " + ", ".join(sorted(names))
    # torch's message mixes advice with the reason ('... unsupported GLOBAL posix.system ...').
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line for line in lines if line and not line.startswith(advice)]
    return (reasons or ["weights-only unpickling failed"])[0].rstrip(".")


def _torch_to_numpy(value: Any) -> np.ndarray | None:
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    return None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads a weights file (see the module docstring for formats and naming).

    Raises:
      FileNotFoundError: no such file.
      WeightsError: an unknown format, an unreadable file, or one that needs code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    tensors: dict[str, np.ndarray] = {}
    metadata: dict[str, Any] = {}
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: np.asarray(data[name]) for name in data.files}
        except (OSError, ValueError) as error:
            raise WeightsError(f"{path}: not a readable .npz file ({error})") from None
        for name, array in arrays.items():
            if array.dtype.kind in "fiub" and array.ndim > 0:
                tensors[_strip_module(name)] = array
            else:
                metadata[name] = array.item() if array.ndim == 0 else array.tolist()
    elif path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise WeightsError(
                f"{path}: reading .safetensors needs safetensors: pip install 'reid_jax[convert]'"
            ) from None
        try:
            tensors = {_strip_module(k): v for k, v in load_file(str(path)).items()}
        except Exception as error:  # safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable .safetensors file ({error})") from None
    elif path.suffix in PYTORCH_SUFFIXES:
        _flatten(_read_pytorch(path), "", tensors, metadata, _torch_to_numpy)
    else:
        raise WeightsError(
            f"{path}: unknown weights format '{path.suffix}' (expected .pth, .pt, .pth.tar, "
            ".bin, .safetensors or .npz)"
        )
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors")
    return Checkpoint(path=path, tensors=tensors, metadata=metadata)
