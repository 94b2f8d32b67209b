"""Tests for reid_jax.models.alignedreid.model: branches against NumPy, shapes, full size."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models.alignedreid.model import AlignedReidModel

B, C, LOCAL = 4, 9, 16
KEY = jax.random.key(0, impl="rbg")


@pytest.fixture(scope="module")
def tiny():
    model = AlignedReidModel(
        num_classes=C, local_dim=LOCAL, backbone_depth=18, width_multiplier=0.0625
    )
    images = jax.random.normal(jax.random.key(1), (B, 128, 64, 3))  # feature map 4 x 2
    variables = jax.jit(functools.partial(model.init, train=False))(KEY, images)

    @jax.jit
    def train(variables, images):
        return model.apply(
            variables,
            images,
            train=True,
            capture_intermediates=True,
            mutable=["batch_stats", "intermediates"],
        )

    return model, variables, images, train(variables, images)


def test_shapes_and_parameter_tree(tiny):
    _, variables, _, (out, mutated) = tiny
    assert jax.tree.map(lambda a: (a.shape, a.dtype), out) == {
        "global": ((B, 32), jnp.float32),
        "local": ((B, 4, LOCAL), jnp.float32),
        "logits": ((B, C), jnp.float32),
    }
    assert jax.tree.map(
        lambda a: a.shape, {k: v for k, v in variables["params"].items() if k != "backbone"}
    ) == {
        "local_conv": {"kernel": (32, LOCAL), "bias": (LOCAL,)},
        "local_bn": {"scale": (LOCAL,), "bias": (LOCAL,)},
        "classifier": {"kernel": (32, C), "bias": (C,)},
    }
    assert set(mutated["batch_stats"]) == {"backbone", "local_bn"}


def test_branches_match_numpy_in_training(tiny):
    _, variables, _, (out, mutated) = tiny
    params = variables["params"]
    fmap = np.asarray(
        mutated["intermediates"]["backbone"]["__call__"][0]["feature_map"], np.float64
    )  # [B, 4, 2, 32]
    global_feat = fmap.mean(axis=(1, 2))
    np.testing.assert_allclose(out["global"], global_feat, rtol=1e-5, atol=1e-6)
    conv = fmap.mean(axis=2) @ params["local_conv"]["kernel"] + params["local_conv"]["bias"]
    mean, var = conv.mean(axis=(0, 1)), conv.var(axis=(0, 1))  # over batch and stripes
    local = np.maximum((conv - mean) / np.sqrt(var + 1e-5), 0.0)
    np.testing.assert_allclose(out["local"], local, rtol=1e-4, atol=1e-4)
    logits = global_feat @ params["classifier"]["kernel"] + params["classifier"]["bias"]
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        mutated["batch_stats"]["local_bn"]["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6
    )


def test_initialisers(tiny):
    _, variables, _, _ = tiny
    params = variables["params"]
    bound = 1 / np.sqrt(32)  # PyTorch default conv init, fan_in = C
    assert np.all(np.abs(params["local_conv"]["kernel"]) <= bound)
    assert np.all(np.abs(params["local_conv"]["bias"]) <= bound)
    assert np.all(np.asarray(params["classifier"]["bias"]) == 0)
    assert np.abs(params["classifier"]["kernel"]).max() < 6e-3  # N(0, 0.001^2)


def test_eval_mode_is_per_sample(tiny):
    model, variables, images, _ = tiny
    evaluate = jax.jit(functools.partial(model.apply, train=False))
    full, single = evaluate(variables, images), evaluate(variables, images[1:2])
    for name in ("global", "local", "logits"):
        np.testing.assert_allclose(single[name][0], full[name][1], rtol=1e-5, atol=1e-6)


def test_invalid_pool_raises():
    model = AlignedReidModel(
        num_classes=3, local_pool="mean", backbone_depth=18, width_multiplier=0.0625
    )
    with pytest.raises(ValueError, match="local_pool"):
        jax.eval_shape(functools.partial(model.init, train=False), KEY, jnp.zeros((1, 64, 32, 3)))


@pytest.mark.parametrize("global_pool,local_pool", [("avg", "avg"), ("max", "max")])
def test_full_size_shapes_and_parameter_count(global_pool, local_pool):
    num_classes = 751  # Market-1501 training identities
    model = AlignedReidModel(
        num_classes=num_classes, global_pool=global_pool, local_pool=local_pool
    )
    images = jnp.zeros((2, 256, 128, 3))
    variables = jax.eval_shape(functools.partial(model.init, train=False), KEY, images)
    out = jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
    assert jax.tree.map(lambda a: a.shape, out) == {
        "global": (2, 2048),
        "local": (2, 8, 128),
        "logits": (2, num_classes),
    }
    num_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    expected = 23_508_032 + (2048 + 1) * 128 + 2 * 128 + (2048 + 1) * num_classes
    assert num_params == expected
