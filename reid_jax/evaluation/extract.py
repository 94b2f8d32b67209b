"""Sharded feature extraction for evaluation: a jitted encoder over padded, masked batches.

`extract_features` runs the encoder with the variables replicated and each batch split on
'data', and returns host arrays of the valid rows (one device->host transfer in total).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from reid_jax import multihost, sharding


def make_sharded_encoder(
    encode: Callable[[Any, dict[str, jax.Array]], Any], mesh: jax.sharding.Mesh
) -> Callable:
    """Jits `encode(variables, batch)` with variables replicated and the batch split on 'data'.

    Args:
      encode: pure function of (variables, batch dict) -> pytree of [b, ...] arrays.
      mesh: the device mesh.

    Returns:
      The jitted function; outputs are replicated (readable on every process).
    """
    replicated = sharding.replicated(mesh)
    jitted = jax.jit(
        encode, in_shardings=(replicated, sharding.batch_sharding(mesh)), out_shardings=replicated
    )
    return multihost.lockstep(jitted, "encoder")


def process_slice(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous share of a full (global) host batch."""
    index, count = jax.process_index(), jax.process_count()
    size = len(next(iter(batch.values())))
    if size % count:
        raise ValueError(f"eval batch of {size} rows does not split over {count} processes")
    share = size // count
    return {k: np.asarray(v)[index * share : (index + 1) * share] for k, v in batch.items()}


def extract_features(
    encoder: Callable,
    variables: Any,
    batches: Iterable[Mapping[str, np.ndarray]],
    mesh: jax.sharding.Mesh,
    desc: str = "encode",
) -> Any:
    """Encodes padded batches and keeps the valid rows (a progress bar on process 0).

    Every batch is a full global batch (identical on every process) with a bool 'mask'
    [b] (False on padding rows); b must be divisible by the data-parallel size. Results stay
    on the device until the end, so there is one device->host transfer in total.

    Args:
      encoder: from `make_sharded_encoder`.
      variables: model variables (replicated).
      batches: iterable of dicts of host arrays, each with 'mask'.
      mesh: the device mesh.
      desc: the progress bar's label.

    Returns:
      The encoder's output pytree, each leaf a host array [N_valid, ...].
    """
    from tqdm import tqdm

    outputs, masks = [], []
    shards = sharding.data_parallel_size(mesh)
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(
        batches, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
        disable=jax.process_index() != 0,
    )  # fmt: skip
    for batch in bar:
        batch = dict(batch)
        if len(batch["mask"]) % shards:
            raise ValueError(
                f"config.eval.batch_size: {len(batch['mask'])} rows do not split over the "
                f"{shards} data shards"
            )
        masks.append(np.asarray(batch.pop("mask"), bool))
        outputs.append(
            encoder(variables, sharding.host_batch_to_global(process_slice(batch), mesh))
        )
    if not outputs:
        raise ValueError("extract_features: no batches")
    outputs = jax.device_get(outputs)
    mask = np.concatenate(masks)
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[mask], *outputs)
