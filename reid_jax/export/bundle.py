"""Inference bundles: a trained model's encoders as self-contained StableHLO (`jax.export`).

A bundle is a folder (written under a temporary name, then renamed into place):

    bundle.json        format version, task, the run's config, preprocessing facts, and per
                       encoder its file, input names / dtypes / shapes ('b' = any batch) and
                       output names
    params.npz         the model variables, flat '/'-joined keys (read with allow_pickle=False)
    <encoder>.jaxexport  `jax.export` serialisation, lowered for CPU and CUDA, called as
                       `f(variables, *inputs)`; every encoder takes a symbolic batch
    vocab.txt etc.     the run's vocabulary files, when the task has them
    <encoder>.onnx     with `onnx=True`, each image encoder as ONNX, checked with onnxruntime
                       (`reid_jax.export.onnx`; bundle.json says per encoder why where not)

`reid_jax.inference.load_bundle` reads one without any model code. A task contributes its
encoders through `export_encoders(model, config, info) -> {name: Encoder}`: images go in as
uint8 [b, H, W, 3] at the model's size (normalisation happens inside), embeddings come out
L2-normalised so that a dot product is the method's similarity.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from reid_jax.export import onnx as onnx_export
from reid_jax.weights.flat import flatten_variables

FORMAT_VERSION = 1
PLATFORMS = ("cpu", "cuda")
BUNDLE_FILE = "bundle.json"
PARAMS_FILE = "params.npz"


@dataclasses.dataclass(frozen=True)
class Encoder:
    """One exported function.

    Attributes:
      fn: (variables, *inputs) -> {output name: [b, ...] array}, pure and jittable.
      inputs: (name, dtype, shape) per input; shape entries are ints or 'b' (the batch).
      doc: one line for bundle.json.
    """

    fn: Callable[..., dict[str, jax.Array]]
    inputs: Sequence[tuple[str, str, tuple[int | str, ...]]]
    doc: str


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows to unit L2 norm (last axis), float32."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def normalize_uint8(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 [b, H, W, 3] -> float32 (x / 255 - mean) / std, as `data.transforms.normalize`."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _input_specs(encoder: Encoder, batch) -> list[jax.ShapeDtypeStruct]:
    return [
        jax.ShapeDtypeStruct(tuple(batch if d == "b" else int(d) for d in shape), jnp.dtype(dtype))
        for _, dtype, shape in encoder.inputs
    ]


def export_encoder(encoder: Encoder, variables: Any) -> jax_export.Exported:
    """Lowers one encoder for `PLATFORMS` with a symbolic batch."""
    (batch,) = jax_export.symbolic_shape("b")
    variable_specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
    return jax_export.export(jax.jit(encoder.fn), platforms=PLATFORMS)(
        variable_specs, *_input_specs(encoder, batch)
    )


def write_bundle(
    out: str | os.PathLike,
    *,
    task: str,
    encoders: dict[str, Encoder],
    variables: Any,
    config: dict[str, Any],
    preprocessing: dict[str, Any],
    files: Sequence[str | os.PathLike] = (),
    onnx: bool = False,
) -> Path:
    """Exports every encoder and writes the bundle folder atomically.

    Args:
      out: the bundle folder to create (must not exist).
      task: the task name.
      encoders: name -> Encoder.
      variables: the model variables the encoders take.
      config: the run's config as JSON-able dict.
      preprocessing: facts a caller needs before `encode_image` (image_size, resize, ...).
      files: extra files copied in (vocabularies).
      onnx: also write each image encoder as `<name>.onnx`, checked with onnxruntime; its
        manifest entry gets "onnx" (file and measured error, or the reason it failed).

    Returns:
      The bundle path.

    Raises:
      FileExistsError: `out` exists.
      OnnxNotInstalledError: `onnx` without jax2onnx and onnxruntime installed.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new bundle folder")
    if onnx:
        onnx_export.require_onnx()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "platforms": list(PLATFORMS),
            "preprocessing": preprocessing,
            "config": config,
            "encoders": {},
            "files": [],
        }
        for name, encoder in encoders.items():
            exported = export_encoder(encoder, variables)
            (tmp / f"{name}.jaxexport").write_bytes(exported.serialize())
            outputs = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
            manifest["encoders"][name] = {
                "file": f"{name}.jaxexport",
                "doc": encoder.doc,
                "inputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in encoder.inputs],
                "outputs": sorted(outputs),
            }
            if onnx and onnx_export.is_image_encoder(encoder):
                entry = onnx_export.write_onnx(encoder, variables, tmp, name)
                manifest["encoders"][name]["onnx"] = entry
        np.savez(tmp / PARAMS_FILE, **flatten_variables(variables))
        for path in files:
            shutil.copyfile(path, tmp / Path(path).name)
            manifest["files"].append(Path(path).name)
        (tmp / BUNDLE_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
