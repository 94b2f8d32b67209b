"""Load an inference bundle (`reid_jax.export.bundle`) and embed, without any model code.

    bundle = load_bundle("bundles/alignedreid")
    feats = bundle.encode("encode_image", images_uint8)["embedding"]   # [N, d], unit rows

Only NumPy, JAX and the bundle's own files are used: `bundle.json` (read as JSON),
`params.npz` (read with `allow_pickle=False`, so nothing in it can run) and the serialised
StableHLO encoders. Inputs are checked against the manifest before a call.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from jax import export as jax_export

BUNDLE_FILE = "bundle.json"
PARAMS_FILE = "params.npz"
SUPPORTED_VERSIONS = (1,)


class BundleError(ValueError):
    """A bundle that is missing, incomplete or from an unknown format version."""


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """'a/b/c' keys -> nested dicts. (`weights.flat.unflatten_variables` does the same, but
    importing the `reid_jax.weights` package loads the model converters, which a bundle
    reader must not.)"""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


@dataclasses.dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
      path: the bundle folder.
      manifest: bundle.json.
      variables: the model variables (nested dicts of NumPy arrays).
      encoders: name -> deserialised `jax.export.Exported`.
    """

    path: Path
    manifest: dict[str, Any]
    variables: dict[str, Any]
    encoders: dict[str, Any]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest["preprocessing"]

    def encode(self, name: str, *inputs: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Runs encoder `name` over the inputs in batches of `batch_size`.

        Args:
          name: an encoder of the manifest (e.g. 'encode_image').
          *inputs: arrays with the manifest's dtypes and shapes, batch first.
          batch_size: rows per call.

        Returns:
          output name -> float32 [N, ...] NumPy array.

        Raises:
          BundleError: unknown encoder, wrong number of inputs, wrong dtype or shape.
        """
        if name not in self.encoders:
            raise BundleError(f"{self.path}: no encoder '{name}'; has {sorted(self.encoders)}")
        specs = self.manifest["encoders"][name]["inputs"]
        if len(inputs) != len(specs):
            raise BundleError(f"{name} takes {len(specs)} inputs ({[s['name'] for s in specs]})")
        arrays = []
        for spec, value in zip(specs, inputs, strict=True):
            value = np.asarray(value)
            fixed = [d for d in spec["shape"] if d != "b"]
            if value.dtype != np.dtype(spec["dtype"]) or list(value.shape[1:]) != fixed:
                raise BundleError(
                    f"{name} input '{spec['name']}': expected {spec['dtype']} "
                    f"{['N', *fixed]}, got {value.dtype} {list(value.shape)}"
                )
            arrays.append(value)
        count = len(arrays[0])
        outputs: dict[str, list[np.ndarray]] = {}
        for start in range(0, count, batch_size):
            chunk = [a[start : start + batch_size] for a in arrays]
            result = self.encoders[name].call(self.variables, *chunk)
            for key, value in result.items():
                outputs.setdefault(key, []).append(np.asarray(value))
        return {k: np.concatenate(v) for k, v in outputs.items()}


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Reads a bundle folder.

    Raises:
      BundleError: missing files, a format version this code does not read, or a parameters
        file that is not plain arrays (nothing in it is unpickled).
    """
    path = Path(path)
    manifest_path = path / BUNDLE_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no {BUNDLE_FILE})")
    manifest = json.loads(manifest_path.read_text())
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise BundleError(
            f"{manifest_path}: format_version {version} is not one of {SUPPORTED_VERSIONS}"
        )
    try:
        with np.load(path / PARAMS_FILE, allow_pickle=False) as data:
            variables = _unflatten({key: data[key] for key in data.files})
    except (OSError, ValueError) as error:  # ValueError: an object array, which needs pickle
        raise BundleError(
            f"{path / PARAMS_FILE}: not a readable parameters file ({error})"
        ) from None
    encoders = {}
    for name, entry in manifest["encoders"].items():
        file = path / entry["file"]
        if not file.is_file():
            raise BundleError(f"{manifest_path}: encoder '{name}' file {file.name} is missing")
        encoders[name] = jax_export.deserialize(bytearray(file.read_bytes()))
    return Bundle(path=path, manifest=manifest, variables=variables, encoders=encoders)
