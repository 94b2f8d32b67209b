"""Tests for reid_jax.models.ssan.multi_view_non_local against a NumPy re-derivation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models.ssan.multi_view_non_local import MultiViewNonLocal, PartDense

B, K, D, R = 5, 4, 16, 8
SLOPE = 0.25


def leaky(x):
    return np.where(x >= 0, x, SLOPE * x)


def np_mv_nln(x, params, mean=None, var=None):
    """MV-NLN (ssan §2.8) in float64; batch statistics when mean/var are None."""
    w = {
        name: np.asarray(params[name]["kernel"], np.float64)
        for name in ("part", "current", "up", "output")
    }
    per_part = lambda v, kernel: np.stack([v[:, k] @ kernel[k] for k in range(K)], axis=1)
    x = np.asarray(x, np.float64)
    p = leaky(per_part(x, w["part"]))
    q = leaky(per_part(x, w["current"]))
    p = p / (np.linalg.norm(p, axis=-1, keepdims=True) + 1e-8)
    q = q / (np.linalg.norm(q, axis=-1, keepdims=True) + 1e-8)
    affinity = np.einsum("bjc,bkc->bjk", p, q) - 1e6 * np.eye(K)
    affinity = affinity - affinity.max(axis=1, keepdims=True)
    attention = np.exp(affinity) / np.exp(affinity).sum(axis=1, keepdims=True)  # over j
    z = np.einsum("bjk,bjc->bkc", attention, p)
    u = per_part(z, w["up"])  # [B, K, D]
    batch_mean, batch_var = u.mean(axis=0), u.var(axis=0)
    if mean is None:
        mean, var = batch_mean, batch_var
    bn = params["up_bn"]
    u = (u - mean) / np.sqrt(var + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
    y = x + leaky(u)
    return per_part(y, w["output"]), attention, batch_mean, batch_var


@pytest.fixture(scope="module")
def setup():
    model = MultiViewNonLocal(relation_dim=R, leaky_slope=SLOPE)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0, impl="rbg"), jnp.zeros((2, K, D))
    )
    # Non-trivial affine BN parameters so that scale/bias placement is checked.
    rng = np.random.default_rng(0)
    variables["params"]["up_bn"] = {
        "scale": jnp.asarray(rng.uniform(0.5, 1.5, (K, D)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=(K, D)) * 0.1, jnp.float32),
    }
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    x = jnp.asarray(np.abs(rng.normal(size=(B, K, D))) - 0.2, jnp.float32)
    return variables, train, evaluate, x


def test_parameter_names_shapes_and_init(setup):
    variables, *_ = setup
    params = variables["params"]
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == {
        "part": {"kernel": (K, D, R)},
        "current": {"kernel": (K, D, R)},
        "up": {"kernel": (K, R, D)},
        "up_bn": {"scale": (K, D), "bias": (K, D)},
        "output": {"kernel": (K, D, R)},
    }
    assert jax.tree.map(lambda a: a.shape, variables["batch_stats"]) == {
        "up_bn": {"mean": (K, D), "var": (K, D)}
    }


def test_part_dense_kaiming_fan_out_init():
    kernel = PartDense(64).init(jax.random.key(1, impl="rbg"), jnp.zeros((1, 6, 128)))["params"][
        "kernel"
    ]
    assert kernel.shape == (6, 128, 64)
    assert abs(float(np.std(kernel)) / np.sqrt(2.0 / 64) - 1.0) < 0.03  # N(0, 2 / C_out)


def test_train_mode_matches_numpy_and_updates_running_stats(setup):
    variables, train, _, x = setup
    out, mutated = train(variables, x)
    expected, attention, batch_mean, batch_var = np_mv_nln(x, variables["params"])
    np.testing.assert_allclose(out["relation"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["attention"], attention, rtol=1e-5, atol=1e-6)
    stats = mutated["batch_stats"]["up_bn"]
    np.testing.assert_allclose(stats["mean"], 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-6)


def test_attention_columns_sum_to_one_with_empty_diagonal(setup):
    variables, train, _, x = setup
    attention = np.asarray(train(variables, x)[0]["attention"])
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(np.diagonal(attention, axis1=1, axis2=2) < 1e-30)
    assert not np.allclose(attention.sum(axis=2), 1.0)  # rows are not normalised


def test_eval_mode_uses_running_stats_and_is_per_sample(setup):
    variables, _, evaluate, x = setup
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(K, D)).astype(np.float32)
    var = rng.uniform(0.5, 2.0, (K, D)).astype(np.float32)
    stats = {"up_bn": {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}}
    v = {"params": variables["params"], "batch_stats": stats}
    out = np.asarray(evaluate(v, x)["relation"])
    expected = np_mv_nln(x, variables["params"], mean, var)[0]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # No batch coupling at test time: sample 0 alone gives the same output.
    np.testing.assert_allclose(evaluate(v, x[:1])["relation"][0], out[0], rtol=1e-5, atol=1e-6)
