"""The shared train-step skeleton: gradient accumulation equals the large batch for
per-example losses (also sharded on 8 devices), the moving average, clipping, and the
optimizer/schedule registry."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from reid_jax import config_lib, sharding
from reid_jax.training import optim, step
from reid_jax.training.state import apply_gradients, create_train_state, model_variables


def _per_example_loss(params, batch_stats, batch, key):
    """Mean squared error of a linear model: a mean of per-example terms (plus a key term so
    the micro-batch keys matter only through noise of zero weight)."""
    del key
    prediction = batch["x"] @ params["w"] + params["b"]
    loss = jnp.mean((prediction - batch["y"]) ** 2)
    return loss, ({"loss": loss}, batch_stats)


def _batch(size=32):
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(size, 5)).astype(np.float32),
        "y": rng.normal(size=(size, 3)).astype(np.float32),
    }


PARAMS = {
    "w": jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32),
    "b": jnp.ones(3),
}


@pytest.mark.parametrize("accum_steps", [2, 4, 8])
def test_accumulated_gradient_equals_large_batch(accum_steps):
    batch = _batch()
    key = jax.random.key(0)
    full, full_metrics, _ = step.compute_gradients(_per_example_loss, PARAMS, {}, batch, key)
    accumulated, metrics, _ = jax.jit(
        functools.partial(step.compute_gradients, _per_example_loss, accum_steps=accum_steps)
    )(PARAMS, {}, batch, key)
    for name in PARAMS:
        np.testing.assert_allclose(accumulated[name], full[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], full_metrics["loss"], rtol=1e-6)
    # Independent check: the gradient of the mean squared error by hand.
    residual = batch["x"] @ np.asarray(PARAMS["w"]) + 1.0 - batch["y"]
    np.testing.assert_allclose(
        full["w"], 2 * batch["x"].T @ residual / residual.size, rtol=1e-5, atol=1e-6
    )


def test_accumulation_on_the_sharded_mesh_matches_one_device():
    mesh = sharding.make_mesh(
        ml_collections.ConfigDict(dict(axis_names=("data",), axis_sizes=(-1,)))
    )
    constrain = lambda tree: jax.lax.with_sharding_constraint(tree, sharding.batch_sharding(mesh))
    batch = sharding.host_batch_to_global(_batch(64), mesh)
    sharded = jax.jit(
        functools.partial(
            step.compute_gradients, _per_example_loss, accum_steps=4, constrain=constrain
        )
    )(PARAMS, {}, batch, jax.random.key(0))[0]
    single = step.compute_gradients(_per_example_loss, PARAMS, {}, _batch(64), jax.random.key(0))[0]
    for name in PARAMS:
        np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-6)


def test_micro_batches_are_contiguous():

    def loss(params, batch_stats, batch, key):
        value = jnp.sum(params["w"]) * 0.0
        return value, (
            {"first": batch["i"][0].astype(jnp.float32)},
            batch_stats,
        )

    batch = {"i": jnp.arange(8)}
    _, metrics, _ = step.compute_gradients(
        loss, {"w": jnp.ones(1)}, {}, batch, jax.random.key(0), accum_steps=4
    )
    assert float(metrics["first"]) == np.mean([0, 2, 4, 6])  # rows [0,1], [2,3], [4,5], [6,7]


def test_moving_average_follows_the_params():
    tx = optax.sgd(1.0)
    state = create_train_state({"params": {"w": jnp.zeros(2)}}, tx, ema=True)
    grads = {"w": jnp.asarray([-1.0, 2.0])}
    state = apply_gradients(state, grads, {}, tx, ema_decay=0.9)
    np.testing.assert_allclose(state.params["w"], [1.0, -2.0])
    np.testing.assert_allclose(state.ema_params["w"], [0.1, -0.2], rtol=1e-6)
    state = apply_gradients(state, grads, {}, tx, ema_decay=0.9)
    np.testing.assert_allclose(
        state.ema_params["w"], [0.9 * 0.1 + 0.1 * 2, -(0.9 * 0.2 + 0.1 * 4)], rtol=1e-6
    )
    np.testing.assert_allclose(
        model_variables(state, use_ema=True)["params"]["w"], state.ema_params["w"]
    )
    plain = create_train_state({"params": {"w": jnp.zeros(2)}}, tx)
    assert plain.ema_params == {}
    with pytest.raises(ValueError, match="train.ema_decay=0"):
        model_variables(plain, use_ema=True)


def _optim_config(**overrides):
    values = dict(
        name="adam", lr=0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, no_decay_groups=(),
        groups=(("all", ".*"),), lr_multipliers=ml_collections.ConfigDict(dict(all=1.0)),
        schedule="constant", decay_epochs=(), decay_factor=0.1, warmup_steps=0, clip_norm=0.0,
    )  # fmt: skip
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_clip_norm_clips_the_global_gradient_norm():
    params = {"a": jnp.zeros(3), "b": jnp.zeros(4)}
    grads = {"a": jnp.full(3, 3.0), "b": jnp.full(4, 4.0)}  # global norm sqrt(27 + 64)
    tx = optim.make_optimizer(
        _optim_config(clip_norm=1.0), params, steps_per_epoch=1, total_steps=1
    )
    _, opt_state = tx.update(grads, tx.init(params), params)
    first_moments = [
        leaf for leaf in jax.tree.leaves(opt_state) if getattr(leaf, "shape", ()) == (3,)
    ]
    norm = np.sqrt(27 + 64)
    np.testing.assert_allclose(first_moments[0], 0.1 * 3.0 / norm, rtol=1e-6)  # (1 - b1) g / |g|


def test_registry_names_are_what_validation_accepts():
    assert set(optim.OPTIMIZERS) >= {"adam", "adamw"}
    assert set(optim.SCHEDULES) >= {"constant", "step", "cosine", "exp"}
    import loop_toy_task as toy

    config = toy.toy_config()
    config.optim.name = "lamb"
    with pytest.raises(
        config_lib.ConfigError,
        match=r"config.optim.name: unknown optimizer 'lamb', choose from \['adam', 'adamw'\]",
    ):
        config_lib.validate(config)
    config = toy.toy_config()
    config.train.grad_accum_steps = 3
    with pytest.raises(config_lib.ConfigError, match="config.train.grad_accum_steps"):
        config_lib.validate(config)
