"""Fully sharded data parallelism (issue 13): with an 'fsdp' mesh axis the train state is split
over its devices, the step equals the replicated one, and a checkpoint restores onto other
device counts and layouts. AlignedReID's step is used (no RNN: fast to compile on 8 fake
devices)."""

import importlib.util

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from reid_jax import sharding
from reid_jax.training import checkpoint, run_setup
from reid_jax.training.tasks import alignedreid

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _config(axis_names, axis_sizes):
    spec = importlib.util.spec_from_file_location("ar_config", "configs/alignedreid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
    config.mesh.axis_names, config.mesh.axis_sizes = axis_names, axis_sizes
    return config


def _two_steps(config, workdir):
    setup = run_setup.setup_run(config, workdir, alignedreid)
    state = setup.make_state(setup.init_variables(jax.random.key(0)))
    step = run_setup.make_train_step(
        alignedreid,
        setup.model,
        setup.tx,
        config,
        setup.info,
        setup.mesh,
        state_sharding=setup.state_sharding,
    )
    iterator = iter(setup.loader)
    key = jax.random.key(1)
    metrics = []
    for _ in range(2):
        batch = sharding.host_batch_to_global(next(iterator), setup.mesh)
        args = (state, batch, key)
        state, out = step.lower(*args).compile(FAST_COMPILE)(*args)
        metrics.append(jax.device_get(out))
    return setup, state, metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same two steps replicated over 8 devices and with 'data' 2 x 'fsdp' 4."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REID_JAX_DATA", str(tmp_path_factory.mktemp("data")))
    mp.setattr(sharding, "FSDP_MIN_ELEMENTS", 256)  # split nearly every tensor of the tiny model
    try:
        replicated = _two_steps(_config(("data",), (-1,)), tmp_path_factory.mktemp("r"))
        sharded = _two_steps(_config(("data", "fsdp"), (2, 4)), tmp_path_factory.mktemp("f"))
    finally:
        mp.undo()
    return replicated, sharded


def test_fsdp_spec_rule():
    assert sharding.fsdp_spec((3, 3, 64, 128), 4) == sharding.P(None, None, None, "fsdp")
    assert sharding.fsdp_spec((1000, 512), 4) == sharding.P("fsdp")  # largest divisible
    assert sharding.fsdp_spec((512, 1000), 4) == sharding.P(None, "fsdp")
    assert sharding.fsdp_spec((512, 512), 4) == sharding.P("fsdp")  # first of equals
    assert sharding.fsdp_spec((1002, 512), 4) == sharding.P(None, "fsdp")  # 1002 % 4 != 0
    assert sharding.fsdp_spec((999, 333), 4) == sharding.P()  # nothing divides
    assert sharding.fsdp_spec((64,), 4) == sharding.P()  # small: replicated
    assert sharding.fsdp_spec((), 4) == sharding.P()
    assert sharding.fsdp_spec((4096, 4096), 1) == sharding.P()


def test_fsdp_step_equals_the_replicated_step(runs):
    (_, state_r, metrics_r), (setup_f, state_f, metrics_f) = runs
    split = [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state_f)
        if "fsdp" in leaf.sharding.spec
    ]
    params = [name for name, _ in split if name.startswith(".params")]
    moments = [name for name, _ in split if name.startswith(".opt_state")]
    assert len(params) >= 20 and len(moments) >= 20, (len(params), len(moments))
    for _, leaf in split:  # each device holds a quarter of a split array
        shard = leaf.addressable_shards[0].data
        assert shard.size * 4 == leaf.size
    for got, want in zip(metrics_f, metrics_r, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=1e-6, err_msg=name)
    host_f, host_r = jax.device_get(state_f), jax.device_get(state_r)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(host_f), jax.tree.leaves(host_r), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_fsdp_checkpoint_restores_onto_other_device_counts(runs, tmp_path):
    _, (_, state, _) = runs
    config = _config(("data",), (-1,)).checkpoint
    manager = checkpoint.make_checkpoint_manager(tmp_path, config, with_data=False)
    try:
        manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()
        expected = jax.device_get(state)
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        layouts = {
            "replicated on 4 devices": sharding.make_mesh(
                {"axis_names": ("data",), "axis_sizes": (-1,)}, devices=jax.devices()[:4]
            ),
            "fsdp 2 on 2 devices": sharding.make_mesh(
                {"axis_names": ("data", "fsdp"), "axis_sizes": (1, 2)}, devices=jax.devices()[6:]
            ),
            "one device": sharding.make_mesh(
                {"axis_names": ("data",), "axis_sizes": (1,)}, devices=jax.devices()[:1]
            ),
        }
        for name, mesh in layouts.items():
            target = checkpoint.abstract_state(shapes, sharding.state_sharding(shapes, mesh))
            restored = manager.restore(
                2, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )["state"]
            leaves = jax.tree.leaves(restored)
            assert {d for leaf in leaves for d in leaf.sharding.device_set} == set(
                mesh.devices.flat
            ), name
            got = jax.tree.leaves(jax.device_get(restored))
            for a, b in zip(got, jax.tree.leaves(expected), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=name)
    finally:
        manager.close()
