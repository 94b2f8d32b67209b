"""Tests of parameter groups, schedules and the multi-group optimizer against NumPy."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from reid_jax.training import optim


def _optim_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=1e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            no_decay_groups=(),
            groups=(("backbone", "^backbone/"), ("heads", ".*")),
            lr_multipliers=ml_collections.ConfigDict(dict(backbone=0.1, heads=1.0)),
            schedule="step",
            decay_epochs=(20, 40),
            decay_factor=0.1,
            warmup_steps=0,
            clip_norm=0.0,
        )
    )
    config.update(overrides)
    return config


PARAMS = {
    "backbone": {"conv": {"kernel": jnp.full((2, 3), 0.5)}, "bn": {"scale": jnp.ones(3)}},
    "conv_global": {"kernel": jnp.full((3, 2), -0.25)},
    "classifier": {"bias": jnp.zeros(4)},
}


def test_labels_first_match_wins():
    labels = optim.param_group_labels(PARAMS, (("backbone", "^backbone/"), ("heads", ".*")))
    assert labels["backbone"]["conv"]["kernel"] == "backbone"
    assert labels["backbone"]["bn"]["scale"] == "backbone"
    assert labels["conv_global"]["kernel"] == "heads"
    # Order matters: a catch-all first takes everything.
    labels = optim.param_group_labels(PARAMS, (("heads", ".*"), ("backbone", "^backbone/")))
    assert set(jax.tree.leaves(labels)) == {"heads"}


def test_labels_unmatched_parameter_is_named():
    with pytest.raises(ValueError, match="classifier/bias"):  # sorted first unmatched
        optim.param_group_labels(PARAMS, (("backbone", "^backbone/"),))


def test_step_schedule_decays_at_epoch_boundaries():
    sched = optim.make_schedule(_optim_config(), steps_per_epoch=10, total_steps=600)
    steps = np.array([0, 199, 200, 399, 400, 599])
    expected = np.array([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    np.testing.assert_allclose([float(sched(s)) for s in steps], expected, rtol=1e-6)


def test_warmup_and_cosine():
    config = _optim_config(schedule="cosine", warmup_steps=4)
    sched = optim.make_schedule(config, steps_per_epoch=10, total_steps=24)
    for step in range(24):
        ramp = min((step + 1) / 4, 1.0)
        cosine = 1.0 if step < 4 else 0.5 * (1 + np.cos(np.pi * (step - 4) / 20))
        np.testing.assert_allclose(float(sched(step)), ramp * cosine, rtol=1e-5, atol=1e-7)


def _numpy_adam(grads, steps, lr, b1=0.9, b2=0.999, eps=1e-8, param=None, wd=0.0):
    """Plain NumPy Adam (bias-corrected, eps outside the sqrt) on a constant gradient."""
    m = np.zeros_like(grads)
    v = np.zeros_like(grads)
    p = np.array(param, np.float64)
    for t in range(1, steps + 1):
        g = grads + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr[t - 1] * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_two_groups_match_numpy_adam(weight_decay):
    config = _optim_config(decay_epochs=(1,), weight_decay=weight_decay)
    tx = optim.make_optimizer(config, PARAMS, steps_per_epoch=2, total_steps=4)
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size).reshape(p.shape), PARAMS)

    @jax.jit
    def run(params):
        state = tx.init(params)
        for _ in range(4):
            updates, state = tx.update(grads, state, params)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
        return params

    out = run(PARAMS)
    schedule = np.array([1.0, 1.0, 0.1, 0.1])  # x0.1 from epoch 1 = step 2
    for path, lr_mult in (
        (("backbone", "conv", "kernel"), 0.1),
        (("backbone", "bn", "scale"), 0.1),
        (("conv_global", "kernel"), 1.0),
        (("classifier", "bias"), 1.0),
    ):
        p0, g, got = PARAMS, grads, out
        for key in path:
            p0, g, got = p0[key], g[key], got[key]
        want = _numpy_adam(
            np.asarray(g, np.float64),
            4,
            1e-3 * lr_mult * schedule,
            param=np.asarray(p0),
            wd=weight_decay,
        )
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)


def test_no_decay_group_and_adamw():
    config = _optim_config(
        name="adamw", weight_decay=0.5, no_decay_groups=("backbone",), schedule="constant"
    )
    tx = optim.make_optimizer(config, PARAMS, steps_per_epoch=1, total_steps=1)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    # Zero gradients: only decoupled decay moves params, by -lr * wd * p, and not the backbone.
    np.testing.assert_array_equal(np.asarray(updates["backbone"]["conv"]["kernel"]), 0.0)
    np.testing.assert_allclose(
        np.asarray(updates["conv_global"]["kernel"]),
        -1e-3 * 0.5 * np.asarray(PARAMS["conv_global"]["kernel"]),
        rtol=1e-6,
    )


def test_group_learning_rates_for_logging():
    config = _optim_config()
    sched = optim.make_schedule(config, steps_per_epoch=10, total_steps=600)
    lrs = optim.group_learning_rates(config, float(sched(250)))
    assert lrs == pytest.approx({"backbone": 1e-5, "heads": 1e-4})


def test_group_options_freeze_until_start_then_own_moments_and_factors():
    """A group frozen until epoch 2 keeps params and optimizer state; it then behaves as a
    fresh Adam with its own b1; another group's lr drops by its epoch factor."""
    options = ml_collections.ConfigDict(
        dict(
            backbone=dict(start_epoch=2, b1=0.5),
            heads=dict(epoch_factors=((1, 0.1),)),
        )
    )
    config = _optim_config(schedule="constant", group_options=options)
    params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
    tx = optim.make_optimizer(config, params, steps_per_epoch=2, total_steps=8)
    state = tx.init(params)
    grads_seq = [
        {"backbone": {"w": jnp.full(3, float(i + 1))}, "head": {"w": jnp.full(2, 2.0)}}
        for i in range(6)
    ]
    history = []
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params)
        history.append(jax.tree.map(np.asarray, updates))
    # Backbone: nothing for steps 0-3; step 4 is a fresh Adam step (first update = -lr * sign).
    for i in range(4):
        np.testing.assert_array_equal(history[i]["backbone"]["w"], 0.0)
    np.testing.assert_allclose(history[4]["backbone"]["w"], -1e-4, rtol=1e-5)
    # Second fresh step with b1 = 0.5, b2 = 0.999, gradients 5 then 6 (lr 1e-3 x 0.1).
    m = 0.5 * (0.5 * 5.0) + 0.5 * 6.0
    v = 0.999 * (0.001 * 25.0) + 0.001 * 36.0
    expected = -1e-4 * (m / (1 - 0.5**2)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(history[5]["backbone"]["w"], expected, rtol=1e-5)
    # Heads: constant gradient -> Adam step of -lr; lr x 0.1 from epoch 1 (step 2).
    np.testing.assert_allclose(history[0]["head"]["w"], -1e-3, rtol=1e-4)
    np.testing.assert_allclose(history[1]["head"]["w"], -1e-3, rtol=1e-4)
    np.testing.assert_allclose(history[2]["head"]["w"], -1e-4, rtol=1e-4)
    lrs = optim.group_learning_rates(config, 1.0, step=3, steps_per_epoch=2)
    assert lrs == pytest.approx({"backbone": 0.0, "heads": 1e-3 * 0.1})
    lrs = optim.group_learning_rates(config, 1.0, step=4, steps_per_epoch=2)
    assert lrs == pytest.approx({"backbone": 1e-4, "heads": 1e-4})


def test_group_options_unknown_key_is_named():
    options = ml_collections.ConfigDict(dict(heads=dict(beta=0.5)))
    with pytest.raises(ValueError, match="group_options.heads.*beta"):
        optim.make_optimizer(
            _optim_config(group_options=options), PARAMS, steps_per_epoch=1, total_steps=2
        )
