"""Meshes, shardings and global arrays: the only module that builds them.

Data parallelism is the default: one mesh axis named 'data' over every device, train state
replicated, batches split on their leading axis. An optional 'fsdp' axis (`config.mesh`:
axis_names ('data', 'fsdp'), axis_sizes (-1, F)) also splits the batch and, in addition,
every large parameter, optimizer moment and moving average over its F devices (fully sharded
data parallelism: XLA gathers a layer's parameters where they are used and reduce-scatters
the gradients); `state_sharding` holds the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
# Arrays smaller than this stay replicated under fsdp: sharding them saves little memory and
# costs a collective each.
FSDP_MIN_ELEMENTS = 1 << 14


def resolve_axis_sizes(axis_sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces the (at most one) -1 entry by the size that uses every device.

    Args:
      axis_sizes: one size per mesh axis; -1 means "the remaining devices".
      num_devices: number of devices the mesh must cover exactly.

    Returns:
      The explicit axis sizes; their product equals num_devices.

    Raises:
      ValueError: more than one -1, a size < 1, or sizes that do not multiply to num_devices.
    """
    sizes = [int(s) for s in axis_sizes]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh.axis_sizes: at most one -1 allowed, got {tuple(sizes)}")
    if any(s < 1 and s != -1 for s in sizes):
        raise ValueError(f"config.mesh.axis_sizes: sizes must be >= 1 or -1, got {tuple(sizes)}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"config.mesh.axis_sizes: {tuple(sizes)} does not divide {num_devices} devices"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh.axis_sizes: {tuple(sizes)} does not cover {num_devices} devices"
        )
    return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, Any] | Any, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds the device mesh described by `config.mesh`.

    Args:
      mesh_config: has `axis_names` (tuple of str, must include 'data') and `axis_sizes`
        (tuple of int, one -1 allowed). Default configs use (('data',), (-1,)).
      devices: devices to use; all of `jax.devices()` when None (tests pass a subset).

    Returns:
      A `jax.sharding.Mesh` with the named axes, devices in `jax.devices()` order.
    """
    names = tuple(mesh_config["axis_names"])
    if DATA_AXIS not in names:
        raise ValueError(f"config.mesh.axis_names: must include '{DATA_AXIS}', got {names}")
    if len(names) != len(tuple(mesh_config["axis_sizes"])):
        raise ValueError(
            "config.mesh.axis_sizes: needs one size per name in config.mesh.axis_names"
        )
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_axis_sizes(mesh_config["axis_sizes"], len(devices))
    for name, size in zip(names, sizes, strict=True):
        if name not in (DATA_AXIS, FSDP_AXIS) and size > 1:
            # No rule shards anything over other axes: their devices would only repeat each
            # other's work.
            raise ValueError(
                f"config.mesh.axis_names: axis '{name}' of size {size} is used by no sharding "
                f"rule (batches split on '{DATA_AXIS}' and '{FSDP_AXIS}', parameters on "
                f"'{FSDP_AXIS}'), so its devices would repeat the same work; remove it or give "
                "it size 1"
            )
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), names)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy of an array on every device of `mesh`."""
    return NamedSharding(mesh, P())


def _batch_axes(mesh: Mesh) -> tuple[str, ...]:
    return tuple(a for a in (DATA_AXIS, FSDP_AXIS) if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits axis 0 over the 'data' (and 'fsdp', if present) mesh axes: with
    fsdp every device still sees its own slice of the batch."""
    return NamedSharding(mesh, P(_batch_axes(mesh)))


def data_parallel_size(mesh: Mesh) -> int:
    """Number of shards a batch is split into (the 'data' x 'fsdp' devices)."""
    return math.prod(int(mesh.shape[a]) for a in _batch_axes(mesh))


def fsdp_size(mesh: Mesh) -> int:
    """Devices a parameter is split over (size of the 'fsdp' axis; 1 without one)."""
    return int(mesh.shape[FSDP_AXIS]) if FSDP_AXIS in mesh.axis_names else 1


def fsdp_spec(shape: Sequence[int], parts: int) -> P:
    """The partition of one array under fsdp: its largest dimension divisible by `parts`
    (the first of equals) split over 'fsdp', or replicated when none divides or the array
    has fewer than `FSDP_MIN_ELEMENTS` elements."""
    if parts <= 1 or math.prod(shape) < FSDP_MIN_ELEMENTS:
        return P()
    candidates = [(size, -axis) for axis, size in enumerate(shape) if size % parts == 0]
    if not candidates:
        return P()
    axis = -max(candidates)[1]
    return P(*([None] * axis), FSDP_AXIS)


def state_sharding(shapes: Any, mesh: Mesh) -> Any:
    """Per-leaf shardings of a train state (or any pytree of arrays / shape structs):
    replicated without an 'fsdp' axis, else split by `fsdp_spec` (parameters, optimizer
    moments and the moving average alike; scalars and small arrays replicated)."""
    parts = fsdp_size(mesh)
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, parts)), shapes)


def host_batch_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns this process's slice of a batch into global arrays sharded on 'data'.

    Args:
      batch: name -> per-process array [b, ...] (b = global batch / process count).
      mesh: the mesh; the leading axis of each global array is split over 'data'.

    Returns:
      name -> `jax.Array` of global shape [b * process_count, ...].
    """
    sharding = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of a host pytree on all devices of `mesh` (replicated)."""
    return jax.device_put(tree, replicated(mesh))


def gather_replicated(tree: Any, mesh: Mesh) -> Any:
    """A pytree of global arrays (e.g. fsdp-split variables) fully copied onto every device
    of `mesh` (a jitted identity, so it also works across processes); a tree already
    replicated on `mesh` (no 'fsdp' axis) is returned as it is."""
    if fsdp_size(mesh) == 1:
        return tree
    return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)
