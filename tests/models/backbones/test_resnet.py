"""Tests for reid_jax.models.backbones.resnet: shapes, torchvision names, explicit padding, BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from reid_jax.models.backbones.resnet import ResNet, resnet_output_channels

KEY = jax.random.key(0, impl="rbg")  # rbg keys compile much faster than threefry on CPU


def torchvision_trunk_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of torchvision's resnet{depth} without fc (written from the
    torchvision layout, independently of the module under test)."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    bottleneck = depth == 50
    expansion = 4 if bottleneck else 1
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, channels):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{leaf}"] = (channels,)

    bn("bn1", 64)
    inplanes = 64
    for stage, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(count):
            p = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            for j, (o, c, k) in enumerate(convs, start=1):
                shapes[f"{p}.conv{j}.weight"] = (o, c, k, k)
                bn(f"{p}.bn{j}", o)
            if stride != 1 or inplanes != planes * expansion:
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    return shapes


def flax_to_torch_name(path: tuple[str, ...]) -> str:
    """The mapping documented in resnet.py's module docstring."""
    leaf = {
        "kernel": "weight",
        "scale": "weight",
        "bias": "bias",
        "mean": "running_mean",
        "var": "running_var",
    }[path[-1]]
    parts = []
    for p in path[:-1]:
        p = p.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")
        parts.append(p.replace("_", ".", 1) if p.startswith("layer") else p)
    return ".".join(parts + [leaf])


@pytest.mark.parametrize(
    "depth,expected_params", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032)]
)
def test_torchvision_names_shapes_and_counts(depth, expected_params):
    model = ResNet(depth=depth)
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), KEY, jnp.zeros((1, 224, 224, 3))
    )
    converted = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(variables[collection]).items():
            shape = leaf.shape
            if len(shape) == 4:  # HWIO -> OIHW
                shape = (shape[3], shape[2], shape[0], shape[1])
            converted[flax_to_torch_name(path)] = shape
    assert converted == torchvision_trunk_shapes(depth)
    # torchvision parameter counts (11,689,512 / 21,797,672 / 25,557,032) minus the fc layer.
    num_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert num_params == expected_params


@pytest.mark.parametrize(
    "depth,width,last_stride,size,expected",
    [
        (50, 1.0, 2, (384, 128), (2, 12, 4, 2048)),
        (50, 1.0, 1, (256, 128), (2, 16, 8, 2048)),
        (18, 1.0, 2, (256, 128), (2, 8, 4, 512)),
        (50, 0.125, 2, (64, 32), (2, 2, 1, 256)),
        (18, 0.0625, 1, (96, 32), (2, 6, 2, 32)),
    ],
)
def test_output_shapes(depth, width, last_stride, size, expected):
    model = ResNet(depth=depth, width_multiplier=width, last_stride=last_stride)
    images = jnp.zeros((2, *size, 3))
    variables = jax.eval_shape(functools.partial(model.init, train=False), KEY, images)
    out = jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
    assert out["feature_map"].shape == expected
    assert expected[-1] == resnet_output_channels(depth, width)


def np_conv(x, kernel, stride, pad):
    """NHWC x HWIO convolution with explicit symmetric zero padding, in float64."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # [B, H', W', C, kh, kw]
    return np.einsum("bhwcij,ijco->bhwo", windows, np.asarray(kernel, np.float64))


def np_max_pool(x, size=3, stride=2, pad=1):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-2, -1))


@pytest.fixture(scope="module")
def tiny_run():
    model = ResNet(depth=18, width_multiplier=0.0625)
    images = jax.random.normal(jax.random.key(1), (3, 32, 24, 3))  # even sizes: SAME differs
    variables = jax.jit(functools.partial(model.init, train=False))(KEY, images)

    @jax.jit
    def run(variables, images):
        return model.apply(
            variables,
            images,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=True,
        )

    out, mutated = run(variables, images)
    return np.asarray(images), variables, out, mutated


def test_strided_convs_use_symmetric_padding(tiny_run):
    images, variables, _, mutated = tiny_run
    params, inter = variables["params"], mutated["intermediates"]
    got = lambda *path: np.asarray(traverse_util.flatten_dict(inter)[(*path, "__call__")][0])
    # Stem: 7x7 stride 2 pad 3.
    np.testing.assert_allclose(
        got("conv1"), np_conv(images, params["conv1"]["kernel"], 2, 3), rtol=1e-4, atol=1e-5
    )
    # 3x3/2 max-pool pad 1 (-inf) after the stem's ReLU, then a 3x3 stride-1 pad-1 conv.
    pooled = np_max_pool(np.maximum(got("bn1"), 0.0))
    np.testing.assert_allclose(
        got("layer1_0", "conv1"),
        np_conv(pooled, params["layer1_0"]["conv1"]["kernel"], 1, 1),
        rtol=1e-4,
        atol=1e-5,
    )
    # Stage 2 entry: strided 3x3 conv pad 1 and the strided 1x1 downsample.
    stage1 = got("layer1_1")
    np.testing.assert_allclose(
        got("layer2_0", "conv1"),
        np_conv(stage1, params["layer2_0"]["conv1"]["kernel"], 2, 1),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        got("layer2_0", "downsample_conv"),
        np_conv(stage1, params["layer2_0"]["downsample_conv"]["kernel"], 2, 0),
        rtol=1e-4,
        atol=1e-5,
    )


def test_batch_norm_train_statistics_and_update(tiny_run):
    _, variables, _, mutated = tiny_run
    inter = traverse_util.flatten_dict(mutated["intermediates"])
    conv = np.asarray(inter[("conv1", "__call__")][0], np.float64)
    mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
    expected = (conv - mean) / np.sqrt(var + 1e-5)  # scale 1, bias 0 at init
    np.testing.assert_allclose(inter[("bn1", "__call__")][0], expected, rtol=1e-3, atol=1e-4)
    stats = mutated["batch_stats"]["bn1"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-4, atol=1e-6)
    assert (
        variables["batch_stats"]["bn1"]["var"].sum() == variables["batch_stats"]["bn1"]["var"].size
    )


def test_eval_mode_uses_running_statistics(tiny_run):
    images, variables, _, mutated = tiny_run
    model = ResNet(depth=18, width_multiplier=0.0625)
    stats = jax.tree.map(lambda x: x * 0.5 + 0.25, mutated["batch_stats"])
    apply = jax.jit(
        functools.partial(
            model.apply,
            train=False,
            mutable=["intermediates"],
            capture_intermediates=lambda mdl, _: mdl.name in ("conv1", "bn1"),
        )
    )
    out, inter = apply({"params": variables["params"], "batch_stats": stats}, images[:1])
    inter = traverse_util.flatten_dict(inter["intermediates"])
    conv = np.asarray(inter[("conv1", "__call__")][0], np.float64)
    bn = stats["bn1"]
    expected = (conv - bn["mean"]) / np.sqrt(np.asarray(bn["var"], np.float64) + 1e-5)
    np.testing.assert_allclose(inter[("bn1", "__call__")][0], expected, rtol=1e-4, atol=1e-5)
    assert out["feature_map"].shape == (1, 1, 1, 32)


def test_conv_init_is_kaiming_normal_fan_out(tiny_run):
    _, variables, _, _ = tiny_run
    kernel = np.asarray(variables["params"]["layer4_1"]["conv2"]["kernel"])  # [3, 3, 32, 32]
    std = np.sqrt(2.0 / (3 * 3 * 32))
    assert abs(kernel.std() / std - 1.0) < 0.05
    assert abs(kernel.mean()) < 5 * std / np.sqrt(kernel.size)  # untruncated, zero mean


def test_invalid_depth_raises():
    with pytest.raises(ValueError, match="depth"):
        jax.eval_shape(
            functools.partial(ResNet(depth=101).init, train=False), KEY, jnp.zeros((1, 32, 32, 3))
        )
