"""Tests of reid_jax.sharding on the 8 fake CPU devices of tests/conftest.py."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reid_jax import sharding


def _mesh_config(names=("data",), sizes=(-1,)):
    return ml_collections.ConfigDict(dict(axis_names=names, axis_sizes=sizes))


@pytest.mark.parametrize(
    "sizes, devices, expected",
    [
        ((-1,), 8, (8,)),
        ((-1, 2), 8, (4, 2)),
        ((2, -1), 8, (2, 4)),
        ((8,), 8, (8,)),
        ((1, 1), 1, (1, 1)),
    ],
)
def test_resolve_axis_sizes(sizes, devices, expected):
    assert sharding.resolve_axis_sizes(sizes, devices) == expected


@pytest.mark.parametrize("sizes", [(-1, -1), (3,), (3, -1), (0,), (16,)])
def test_resolve_axis_sizes_rejects(sizes):
    with pytest.raises(ValueError, match="config.mesh.axis_sizes"):
        sharding.resolve_axis_sizes(sizes, 8)


def test_default_mesh_uses_every_device_on_data():
    mesh = sharding.make_mesh(_mesh_config())
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == jax.device_count() == 8
    assert sharding.data_parallel_size(mesh) == 8
    assert list(mesh.devices.ravel()) == jax.devices()


def test_explicit_axes_and_device_subset():
    mesh = sharding.make_mesh(_mesh_config(("data", "model"), (-1, 1)))
    assert dict(mesh.shape) == {"data": 8, "model": 1}
    single = sharding.make_mesh(_mesh_config(), devices=jax.devices()[:1])
    assert single.shape["data"] == 1


def test_mesh_config_errors_name_field():
    with pytest.raises(ValueError, match="config.mesh.axis_names"):
        sharding.make_mesh(_mesh_config(("model",), (-1,)))
    with pytest.raises(ValueError, match="config.mesh.axis_sizes"):
        sharding.make_mesh(_mesh_config(("data", "model"), (-1,)))


def test_unused_axis_larger_than_one_is_rejected():
    # No sharding rule uses 'model': its 2 devices would repeat each other's work.
    with pytest.raises(ValueError, match="axis 'model' of size 2 is used by no sharding rule"):
        sharding.make_mesh(_mesh_config(("data", "model"), (-1, 2)))


def test_shardings():
    mesh = sharding.make_mesh(_mesh_config(("data", "model"), (8, 1)))
    assert sharding.replicated(mesh).spec == P()
    assert sharding.batch_sharding(mesh).spec == P("data")


def test_host_batch_to_global_splits_axis_zero():
    mesh = sharding.make_mesh(_mesh_config())
    batch = {
        "image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3),
        "label": np.arange(16, dtype=np.int32),
    }
    out = sharding.host_batch_to_global(batch, mesh)
    for name, value in batch.items():
        assert out[name].shape == value.shape
        np.testing.assert_array_equal(np.asarray(out[name]), value)
        shards = out[name].addressable_shards
        assert len(shards) == 8
        assert {s.data.shape[0] for s in shards} == {2}
        for shard in shards:  # each device holds its contiguous 2-row slice
            np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])


def test_replicate_places_full_copies():
    mesh = sharding.make_mesh(_mesh_config())
    tree = sharding.replicate({"w": np.ones((3, 2), np.float32)}, mesh)
    assert tree["w"].sharding.is_fully_replicated
    assert len(tree["w"].addressable_shards) == 8
