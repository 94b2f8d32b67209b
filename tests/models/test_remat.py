"""Rematerialisation options (ResNet.remat, SsanModel.remat): same parameter
tree, same outputs and gradients, and less XLA memory on CPU with the task's compiler options."""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from reid_jax import config_lib
from reid_jax.models.backbones import resnet
from reid_jax.models.backbones.resnet import ResNet
from reid_jax.models.ssan.model import SsanModel
from reid_jax.training import xla_options
from reid_jax.training.tasks import ssan
from reid_jax.training.tasks.base import TrainDataInfo

KEY = jax.random.key(0, impl="rbg")
B, T, VOCAB = 4, 7, 40
TINY = dict(
    num_classes=5,
    vocab_size=VOCAB,
    embed_dim=8,
    lstm_hidden=32,
    feature_dim=16,
    num_parts=2,
    relation_dim=8,
    backbone_depth=18,
    backbone_width=0.0625,
    last_stride=1,
)
CPU_OPTIONS = dict(xla_options.CPU_REMAT_OPTIONS)


def shapes(tree):
    return {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(tree).items()}


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([7, 3, 1, 5], np.int32)
    partner_lengths = np.array([2, 7, 4, 0], np.int32)  # 0: a caption without words
    captions = rng.integers(1, VOCAB, (B, T)).astype(np.int32)
    partners = rng.integers(1, VOCAB, (B, T)).astype(np.int32)
    captions[np.arange(T)[None] >= lengths[:, None]] = 0
    partners[np.arange(T)[None] >= partner_lengths[:, None]] = 0
    images = rng.normal(size=(B, 128, 64, 3)).astype(np.float32)
    return images, captions, lengths, partners, partner_lengths


@pytest.mark.parametrize(
    "make",
    [
        lambda remat: ResNet(depth=50, width_multiplier=0.125, remat=remat),
        lambda remat: SsanModel(**TINY, remat="all" if remat else "none"),
    ],
    ids=["resnet50", "ssan"],
)
def test_parameter_paths_and_shapes_do_not_change(make):
    inputs = (jnp.zeros((2, 64, 32, 3)),) if isinstance(make(False), ResNet) else make_batch()

    def init(model):
        return jax.eval_shape(functools.partial(model.init, train=False), KEY, *inputs)

    plain, remat = init(make(False)), init(make(True))
    assert set(plain) == set(remat) == {"params", "batch_stats"}
    for collection in plain:
        assert shapes(plain[collection]) == shapes(remat[collection])
    # Spot-check names that checkpoints and the PyTorch maps rely on.
    flat = shapes(remat["params"])
    if isinstance(make(False), ResNet):
        assert flat["layer1_0/conv3/kernel"] == (1, 1, 8, 32)
        assert "layer4_2/bn3/scale" in flat and "layer2_0/downsample_conv/kernel" in flat
    else:
        assert flat["word_attention/kernel"] == (32, 2)
        assert flat["bilstm/recurrent_kernel"] == (2, 32, 128)
        assert "backbone/layer3_1/conv2/kernel" in flat


def host_variables(abstract, seed=0):
    """Variables filled on the host (compiling the real init would cost seconds)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name, shape = path[-1], leaf.shape
        if name in ("mean", "bias"):
            return 0.1 * rng.normal(size=shape)
        if name in ("var", "scale"):
            return rng.uniform(0.8, 1.2, shape)
        fan_in = shape[-2] * (np.prod(shape[:2]) if len(shape) == 4 else 1) if len(shape) > 1 else 1
        return rng.normal(size=shape) / np.sqrt(fan_in)

    flat = traverse_util.flatten_dict(abstract)
    return traverse_util.unflatten_dict(
        {path: jnp.asarray(fill(path, leaf), jnp.float32) for path, leaf in flat.items()}
    )


@pytest.fixture(scope="module")
def ssan_runs():
    """Loss, gradients and new batch stats of the tiny SSAN's training step without and with
    full remat, compiled with the task's CPU options (which keep the remat barriers).

    The trunk is cut to one block per stage (an identity and three downsampling shortcuts)
    to halve the compile time.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(resnet.STAGE_BLOCKS, 18, (1, 1, 1, 1))
        return _ssan_runs()


def _ssan_runs():
    batch = make_batch()
    model = SsanModel(**TINY)
    variables = host_variables(
        jax.eval_shape(functools.partial(model.init, train=False), KEY, *batch)
    )
    rng = np.random.default_rng(1)
    # Random projections of every output so that each gradient path carries signal.
    out_shapes = jax.eval_shape(functools.partial(model.apply, train=False), variables, *batch)
    weights = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), out_shapes)

    def run(policy):
        model = SsanModel(**TINY, remat=policy)

        def loss_fn(params, batch_stats):
            out, mutated = model.apply(
                {"params": params, "batch_stats": batch_stats},
                *batch,
                train=True,
                rngs={"dropout": jax.random.key(2)},
                mutable=["batch_stats"],
            )
            dots = jax.tree.map(lambda o, w: jnp.sum(o * w), out, weights)
            return sum(jax.tree.leaves(dots)), mutated["batch_stats"]

        grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        args = (variables["params"], variables["batch_stats"])
        compiled = grad_fn.lower(*args).compile(compiler_options=CPU_OPTIONS)
        (loss, stats), grads = compiled(*args)
        return float(loss), jax.device_get(grads), jax.device_get(stats)

    return {policy: run(policy) for policy in ("none", "all")}


def test_remat_gives_the_same_loss_gradients_and_batch_stats(ssan_runs):
    loss, grads, stats = ssan_runs["none"]
    remat_loss, remat_grads, remat_stats = ssan_runs["all"]
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-5)
    flat, remat_flat = traverse_util.flatten_dict(grads), traverse_util.flatten_dict(remat_grads)
    assert flat.keys() == remat_flat.keys()
    for path, grad in flat.items():
        scale = np.abs(grad).max() + 1e-6
        np.testing.assert_allclose(
            remat_flat[path] / scale, grad / scale, atol=2e-5, err_msg="/".join(path)
        )
    # Gradients reach every recomputed part (a broken remat could silently return zeros).
    for path in [
        ("backbone", "layer1_0", "conv1", "kernel"),
        ("backbone", "layer4_0", "bn2", "scale"),
        ("bilstm", "recurrent_kernel"),
        ("word_attention", "kernel"),
    ]:
        assert np.abs(flat[path]).max() > 0, path
    remat_flat_stats = traverse_util.flatten_dict(remat_stats)
    for path, value in traverse_util.flatten_dict(stats).items():
        np.testing.assert_allclose(remat_flat_stats[path], value, rtol=1e-5, atol=1e-6)


def test_cpu_compiler_options_make_remat_save_memory():
    """A chain of checkpointed tanh layers: with the options XLA:CPU keeps the recomputation
    in the backward pass; without them it merges it away and saves nothing (if that second
    assertion starts failing, XLA keeps remat barriers by itself and the options can go)."""

    def layer(w, x):
        return jnp.tanh(jnp.tanh(x @ w) @ w)

    def loss(weights, x, remat):
        for w in weights:
            x = (jax.checkpoint(layer) if remat else layer)(w, x)
        return jnp.sum(x**2)

    weights = [jax.ShapeDtypeStruct((64, 64), jnp.float32)] * 8
    x = jax.ShapeDtypeStruct((4096, 64), jnp.float32)  # 1 MiB per activation

    def temp_bytes(remat, options):
        grad = jax.jit(jax.grad(functools.partial(loss, remat=remat)))
        compiled = grad.lower(weights, x).compile(compiler_options=options)
        return compiled.memory_analysis().temp_size_in_bytes

    plain = temp_bytes(False, None)
    assert plain >= 16 * 2**20  # two stored activations per layer
    assert temp_bytes(True, CPU_OPTIONS) < 0.7 * plain
    assert temp_bytes(True, None) >= 0.9 * plain


def _model_config(remat):
    return ml_collections.ConfigDict(dict(model=dict(remat=remat)))


def test_compiler_options_only_for_remat_on_cpu():
    assert ssan.compiler_options(_model_config("none"), backend="cpu") is None
    assert ssan.compiler_options(_model_config("backbone"), backend="gpu") is None
    options = ssan.compiler_options(_model_config("all"), backend="cpu")
    assert options == {"xla_disable_hlo_passes": "cse_barrier_expander"}
    options["extra"] = "x"  # a copy: callers may extend it
    assert xla_options.CPU_REMAT_OPTIONS == CPU_OPTIONS


def test_unknown_policy_names_the_config_field():
    config = ml_collections.ConfigDict(
        dict(model=dict(TINY, remat="blocks", dropout_rate=0.3, leaky_slope=0.25, dtype="float32"))
    )
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=5)
    with pytest.raises(config_lib.ConfigError, match="model.remat"):
        ssan.create_model(config, info)
    with pytest.raises(ValueError, match="remat"):
        jax.eval_shape(
            lambda: SsanModel(**TINY, remat="blocks").init(KEY, *make_batch(), train=False)
        )


def test_config_defaults_reach_the_model():
    spec = importlib.util.spec_from_file_location("ssan_config", "configs/ssan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=5)
    for arg, policy in [(None, "none"), ("cuhk_pedes", "all"), ("icfg_pedes,smoke", "all")]:
        config = module.get_config(arg)
        assert config.model.remat == policy
        assert ssan.create_model(config, info).remat == policy
