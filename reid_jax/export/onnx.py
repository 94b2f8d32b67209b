"""ONNX copies of a bundle's image encoders, checked with onnxruntime (optional `onnx` extra).

An image encoder is an `Encoder` whose one input is uint8 [b, H, W, 3]. Each becomes
`<encoder>.onnx` beside its `.jaxexport`: the same input name, the batch dimension symbolic
('b'), the variables baked in as initializers, the same named float32 outputs. Before the file
is kept, onnxruntime runs it on random images in batches of `CHECK_BATCHES` and every output
must match the jax function within `TOLERANCE`. bundle.json records per image encoder

    "onnx": {"file": "encode_image.onnx", "max_abs_error": 3e-7, "opset": 23,
             "checked_batches": [1, 3], "jax2onnx": "0.17.1"}

or, where conversion or the check failed, {"reason": "<exception type>: <first line>"}; a
failure never stops the bundle.

The encoder is traced to a jaxpr here, outside jax2onnx, and jax2onnx converts an evaluation
of that jaxpr. jax2onnx's own Flax Linen shims would otherwise replace nn.Conv / nn.BatchNorm
/ nn.max_pool while it traces, and in 0.17.1 they mix NCHW and NHWC operands of a ResNet
residual add and reject `BatchNorm(use_running_average=...)` set in the constructor; plain
JAX primitives it converts faithfully. One primitive is rewritten on the way:
`reduce_window_max` (max pooling), which jax2onnx lowers to an ONNX MaxPool whose every axis,
batch and channels included, is spatial, a 4-D pool that onnxruntime rejects; it becomes the
maximum of the window's strided slices, which is exact.

jax2onnx 0.17.1 is installed with `pip install --no-deps` (see `INSTALL`): its metadata caps
orbax-checkpoint below 0.11.37, which the pinned orbax-checkpoint contradicts, though it never
imports orbax.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export
from jax import lax
from jax.extend import core as jax_core

if TYPE_CHECKING:
    from reid_jax.export.bundle import Encoder

JAX2ONNX_VERSION = "0.17.1"
INSTALL = f"pip install 'reid_jax[onnx]' && pip install --no-deps jax2onnx=={JAX2ONNX_VERSION}"
OPSET = 23
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)
# Call-like primitives whose body is evaluated in place, so that a max pool inside is rewritten
# too: name -> the parameter holding the body.
_INLINED = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
}


class OnnxNotInstalledError(ImportError):
    """--onnx was asked for without jax2onnx and onnxruntime installed."""


def require_onnx() -> None:
    """Raises OnnxNotInstalledError, naming the install command, unless jax2onnx and
    onnxruntime import."""
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise OnnxNotInstalledError(
            f"ONNX export needs jax2onnx and onnxruntime ({error}); install them with: {INSTALL}"
        ) from None


def is_image_encoder(encoder: Encoder) -> bool:
    """Whether the encoder takes exactly one uint8 [b, H, W, 3] input."""
    if len(encoder.inputs) != 1:
        return False
    _, dtype, shape = encoder.inputs[0]
    return dtype == "uint8" and len(shape) == 4 and shape[0] == "b" and shape[3] == 3


def max_pool_by_slices(
    x: jax.Array,
    *,
    window_dimensions: Sequence[int],
    window_strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    base_dilation: Sequence[int],
    window_dilation: Sequence[int],
) -> jax.Array:
    """`lax.reduce_window_max` as the maximum of one strided slice per window offset.

    Args:
      x: [..] operand; axes with a 1-wide, stride-1, unpadded window (batch, channels) are
        left whole, so a symbolic batch stays symbolic.
      window_dimensions, window_strides, padding, base_dilation, window_dilation: the
        primitive's parameters (base dilation must be 1).

    Returns:
      The pooled array, equal to the primitive's result (max is exact).
    """
    if any(d != 1 for d in base_dilation):
        raise NotImplementedError("max pooling with base dilation has no ONNX rewrite here")
    lowest = jnp.array(
        -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min, x.dtype
    )
    # Padding as concatenated edges of the pool's identity: jax2onnx 0.17.1's lax.pad cannot
    # give its result a symbolic batch.
    for axis, (low, high) in enumerate(padding):
        if low or high:
            edge = lax.full_like(lax.slice_in_dim(x, 0, 1, axis=axis), lowest)
            x = jnp.concatenate([edge] * low + [x] + [edge] * high, axis=axis)
    pooled = None
    for offset in itertools.product(*(range(w) for w in window_dimensions)):
        piece = x
        geometry = zip(offset, window_dimensions, window_strides, window_dilation, strict=True)
        for axis, (start, window, stride, dilation) in enumerate(geometry):
            if window == 1 and stride == 1:
                continue
            count = (x.shape[axis] - (window - 1) * dilation - 1) // stride + 1
            first = start * dilation
            piece = lax.slice_in_dim(piece, first, first + (count - 1) * stride + 1, stride, axis)
        pooled = piece if pooled is None else jnp.maximum(pooled, piece)
    return pooled


def _evaluate(jaxpr: jax_core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """Evaluates a jaxpr primitive by primitive, inlining call-like primitives and rewriting
    `reduce_window_max` (see the module docstring); returns its outputs in order."""
    env: dict[Any, Any] = {}

    def read(var):
        return var.val if isinstance(var, jax_core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        values = [read(var) for var in eqn.invars]
        name = eqn.primitive.name
        if name == "reduce_window_max":
            outputs = [max_pool_by_slices(*values, **eqn.params)]
        elif name in _INLINED:
            body = eqn.params[_INLINED[name]]
            if isinstance(body, jax_core.ClosedJaxpr):
                outputs = _evaluate(body.jaxpr, body.consts, values)
            else:
                outputs = _evaluate(body, (), values)
        else:
            result = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            outputs = result if eqn.primitive.multiple_results else [result]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(var) for var in jaxpr.outvars]


def convert_image_encoder(encoder: Encoder, variables: Any, *, name: str = "encoder") -> Any:
    """The encoder with its variables as an ONNX model (symbolic batch 'b').

    Args:
      encoder: an image encoder (`is_image_encoder`).
      variables: the model variables, baked in as initializers.
      name: the ONNX graph's name.

    Returns:
      `onnx.ModelProto`: input [b, H, W, 3] uint8 under the encoder's input name, one output
      per encoder output under the same name.
    """
    import jax2onnx

    (input_name, dtype, shape) = encoder.inputs[0]
    (batch,) = jax_export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct(
        tuple(batch if d == "b" else int(d) for d in shape), jnp.dtype(dtype)
    )
    closed, out_shapes = jax.make_jaxpr(
        lambda images: encoder.fn(variables, images), return_shape=True
    )(spec)
    output_names = sorted(out_shapes)  # a dict's leaves come in sorted key order

    def primitives(images):
        outputs = _evaluate(closed.jaxpr, closed.consts, [images])
        return dict(zip(output_names, outputs, strict=True))

    return jax2onnx.to_onnx(
        primitives,
        [spec],
        model_name=name,
        opset=OPSET,
        input_names=[input_name],
        output_names=output_names,
    )


def max_abs_error(model: bytes, encoder: Encoder, variables: Any, *, seed: int = 0) -> float:
    """Largest |onnxruntime - jax| over every output, on random uint8 images in batches of
    `CHECK_BATCHES`.

    Args:
      model: a serialised ONNX model from `convert_image_encoder`.
      encoder, variables: what it was converted from.
      seed: the images' random seed.

    Returns:
      The maximum absolute difference; NaN if either side produced a NaN.

    Raises:
      ValueError: an output is missing or has another shape than the jax function's.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    (input_name, _, shape) = encoder.inputs[0]
    names = [output.name for output in session.get_outputs()]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (sum(CHECK_BATCHES), *shape[1:]), dtype=np.uint8)
    # One jax call over all the images (one compilation); onnxruntime takes them per batch.
    want = {key: np.asarray(value) for key, value in jax.jit(encoder.fn)(variables, images).items()}
    if sorted(names) != sorted(want):
        raise ValueError(f"outputs {sorted(names)} differ from the encoder's {sorted(want)}")
    starts = np.cumsum((0, *CHECK_BATCHES))
    errors = []
    for start, stop in zip(starts[:-1], starts[1:], strict=True):
        got = session.run(names, {input_name: images[start:stop]})
        for key, value in zip(names, got, strict=True):
            expected = want[key][start:stop]
            if value.shape != expected.shape:
                raise ValueError(f"'{key}' is {value.shape} under onnxruntime, {expected.shape}")
            errors.append(np.max(np.abs(value.astype(np.float64) - expected)))
    return float(np.max(errors))  # NaN anywhere stays NaN (Python's max would drop it)


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def write_onnx(
    encoder: Encoder, variables: Any, folder: str | os.PathLike, name: str
) -> dict[str, Any]:
    """Converts and checks one image encoder; writes `<name>.onnx` into `folder` if it passes.

    Returns:
      The bundle.json "onnx" entry: file, max_abs_error, opset, checked_batches, jax2onnx;
      or {"reason": ...} where conversion or the check failed (nothing written).
    """
    try:
        model = convert_image_encoder(encoder, variables, name=name)
        data = model.SerializeToString()
        error = max_abs_error(data, encoder, variables)
    except Exception as failure:  # any failure of the optional copy is reported, not raised
        return {"reason": _reason(failure)}
    if not error <= TOLERANCE:
        return {"reason": f"max |diff| {error:.1e} vs jax exceeds {TOLERANCE:.0e}"}
    file = f"{name}.onnx"
    with open(os.path.join(folder, file), "wb") as stream:
        stream.write(data)
    opsets = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    return {
        "file": file,
        "max_abs_error": error,
        "opset": opsets[0] if opsets else OPSET,
        "checked_batches": list(CHECK_BATCHES),
        "jax2onnx": metadata.version("jax2onnx"),
    }


def summary_lines(bundle: str | os.PathLike) -> list[str]:
    """One line per image encoder of a bundle written with ONNX copies, e.g.
    'onnx: encode_image.onnx (max |diff| 3e-07 vs jax)' or
    'onnx: encode_image not exported: NotImplementedError: ...'."""
    with open(os.path.join(bundle, "bundle.json")) as stream:
        manifest = json.load(stream)
    lines = []
    for name, entry in manifest["encoders"].items():
        if "onnx" not in entry:
            continue
        onnx = entry["onnx"]
        if "file" in onnx:
            lines.append(f"onnx: {onnx['file']} (max |diff| {onnx['max_abs_error']:.0e} vs jax)")
        else:
            lines.append(f"onnx: {name} not exported: {onnx['reason']}")
    return lines or ["onnx: no image encoder (uint8 [b, H, W, 3] input) to export"]
