"""ONNX image encoders (the `onnx` extra, issue 12): each task's smoke model, exported with
random variables and run under onnxruntime, matches the model within 1e-4 at two batch sizes;
an encoder that cannot be converted is reported with its reason instead of stopping the export.
(The slow end-to-end `reid-jax export --onnx` of a trained run is in test_bundle.py.)"""

import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest

from reid_jax.data import transforms
from reid_jax.export import onnx as onnx_export
from reid_jax.export.bundle import Encoder, normalize_uint8, write_bundle
from reid_jax.training.tasks import alignedreid, aptm, attribute_joint, ssan
from reid_jax.training.tasks.base import TrainDataInfo

REPO = Path(__file__).resolve().parents[2]


def _config(name):
    spec = importlib.util.spec_from_file_location(f"{name}_onnx", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def _random_variables(shapes, seed):
    """Random values of the image branch's variable shapes, drawn on the host: fan-in scaled
    kernels, BatchNorm statistics away from (0, 1) so that their folding is tested, small
    biases. (Compiling `init`'s random number generation would take 5-15 s per model.)"""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "var":
            values = rng.uniform(0.5, 2.0, shape)
        elif name == "kernel":
            values = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        elif name == "scale":
            values = 1.0 + 0.1 * rng.normal(size=shape)
        else:  # biases, running means, position-bias tables
            values = 0.1 * rng.normal(size=shape)
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _unit(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _onnx_outputs(bundle, images_by_batch):
    """Checks the manifest entry and the file's symbolic batch; runs it on each image batch."""
    entry = json.loads((bundle / "bundle.json").read_text())["encoders"]["encode_image"]
    onnx = entry["onnx"]
    assert onnx["file"] == "encode_image.onnx" and onnx["opset"] == onnx_export.OPSET
    assert 0 <= onnx["max_abs_error"] <= 1e-4 and onnx["checked_batches"] == [1, 3]
    session = onnxruntime.InferenceSession(
        str(bundle / onnx["file"]), providers=["CPUExecutionProvider"]
    )
    (image,) = session.get_inputs()
    assert image.name == "image" and image.type == "tensor(uint8)"
    assert image.shape == ["b", *entry["inputs"][0]["shape"][1:]]
    names = [output.name for output in session.get_outputs()]
    assert sorted(names) == entry["outputs"]
    return [
        dict(zip(names, session.run(names, {"image": x}), strict=True)) for x in images_by_batch
    ]


INFO = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=4)
ATTRIBUTE_INFO = TrainDataInfo(
    num_examples=8,
    steps_per_epoch=1,
    num_classes=2,
    extras={
        "groups": [[0], [1, 2, 3], [4, 5]],
        "softmax_groups": [[1, 4]],
        "sid_attributes": [[0] * 6, [1] * 6],
    },
)
APTM_INFO = TrainDataInfo(
    num_examples=8, steps_per_epoch=1, num_classes=4, extras={"vocab_size": 40}
)


def _normalised(images, mean, std):
    return jnp.asarray(np.stack([transforms.normalize(im, mean, std) for im in images]))


def _levels(feats):
    parts = [_unit(feats[k]) for k in ("global", "parts", "relation")]
    return np.concatenate(parts, axis=1) / np.sqrt(3.0)


def _aptm_normalisation(config):
    from reid_jax.data import aptm_examples

    return aptm_examples.NORMALISATION[config.data.test_normalisation]


# name -> (task, info, (mean, std) of config, model outputs -> the expected encoder outputs)
CASES = {
    "alignedreid": (
        alignedreid,
        INFO,
        lambda c: (transforms.ALIGNEDREID_MEAN, transforms.ALIGNEDREID_STD),
        None,
        lambda out: {"embedding": _unit(out[0]["global"])},
    ),
    "ssan": (
        ssan,
        INFO,
        lambda c: (transforms.SSAN_MEAN, transforms.SSAN_STD),
        "encode_image",
        lambda out: {"embedding": _levels(out)},
    ),
    "attribute_joint": (
        attribute_joint,
        ATTRIBUTE_INFO,
        lambda c: (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD),
        "encode_image",
        lambda out: {
            "embedding": _unit(out["embedding"]),
            "attribute_logits": np.asarray(out["attribute_logits"]),
        },
    ),
    # APTM's Swin; the smoke model has one shifted-window block.
    "aptm": (
        aptm,
        APTM_INFO,
        _aptm_normalisation,
        "encode_image",
        lambda out: {"embedding": np.asarray(out["image_feats"])},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_image_encoder_matches_the_model(tmp_path, name):
    """The task's encode_image written with onnx=True: under onnxruntime it reproduces the
    model applied here to host-normalised random images, in batches of 2 and 5, within 1e-4.
    The task's other encoders (text, attribute vectors, pairs) are not image encoders."""
    task, info, normalisation, method, expected = CASES[name]
    config = _config(name)
    model = task.create_model(config, info)
    encoders = task.export_encoders(model, config, info)
    assert [e for e in encoders if onnx_export.is_image_encoder(encoders[e])] == ["encode_image"]
    height, width = config.data.image_size
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, method=method))
    shapes = jax.eval_shape(
        lambda: model.init(
            {"params": jax.random.key(0), "dropout": jax.random.key(0)},
            jnp.zeros((2, height, width, 3)),
            train=False,
            method=method,
        )
    )
    variables = _random_variables(shapes, seed=0)
    bundle = write_bundle(
        tmp_path / name,
        task=name,
        encoders={"encode_image": encoders["encode_image"]},
        variables=variables,
        config={},
        preprocessing={},
        onnx=True,
    )

    images = np.random.default_rng(1).integers(0, 256, (7, height, width, 3), dtype=np.uint8)
    got = _onnx_outputs(bundle, [images[:2], images[2:]])  # batch sizes the export did not check
    want = expected(apply(variables, _normalised(images, *normalisation(config))))
    assert sorted(got[0]) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(np.concatenate([g[key] for g in got]), value, atol=1e-4)


def _mean_colour(variables, images):
    """A convertible image encoder: per-image mean colour, scaled by a variable."""
    x = normalize_uint8(images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return {"embedding": x.mean(axis=(1, 2)) * variables["params"]["scale"]}


def _colour_spectrum(variables, images):
    """An image encoder jax2onnx 0.17.1 cannot convert: eigenvalues of each image's 3 x 3
    colour Gram matrix (its eigh takes one matrix, not a batch of them)."""
    x = normalize_uint8(images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).reshape(images.shape[0], -1, 3)
    gram = jnp.einsum("bpc,bpd->bcd", x, x) / x.shape[1]
    return {"embedding": jnp.linalg.eigh(gram)[0] * variables["params"]["scale"]}


def test_an_encoder_that_cannot_be_converted_is_reported_not_fatal(tmp_path, monkeypatch):
    image = [("image", "uint8", ("b", 8, 4, 3))]
    variables = {"params": {"scale": jnp.float32(2.0)}}
    encoders = {
        "encode_image": Encoder(_mean_colour, image, "mean colour"),
        "encode_spectrum": Encoder(_colour_spectrum, image, "colour spectrum"),
    }
    kwargs = dict(task="toy", variables=variables, config={}, preprocessing={}, onnx=True)
    bundle = write_bundle(tmp_path / "b", encoders=encoders, **kwargs)
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["encoders"]["encode_spectrum"]["onnx"] == {
        "reason": "NotImplementedError: eigh currently supports rank-2 inputs only"
    }
    assert manifest["encoders"]["encode_image"]["onnx"]["max_abs_error"] <= 1e-6
    # Both encoders stay in the bundle as StableHLO; only the convertible one has an ONNX file.
    assert sorted(p.name for p in bundle.glob("*.onnx")) == ["encode_image.onnx"]
    assert sorted(p.name for p in bundle.glob("*.jaxexport")) == [
        "encode_image.jaxexport",
        "encode_spectrum.jaxexport",
    ]
    assert onnx_export.summary_lines(bundle) == [
        f"onnx: encode_image.onnx (max |diff| "
        f"{manifest['encoders']['encode_image']['onnx']['max_abs_error']:.0e} vs jax)",
        "onnx: encode_spectrum not exported: "
        "NotImplementedError: eigh currently supports rank-2 inputs only",
    ]

    # A converted model that misses the tolerance is reported, and its file is not kept.
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)
    bundle = write_bundle(
        tmp_path / "c", encoders={"encode_image": encoders["encode_image"]}, **kwargs
    )
    reason = json.loads((bundle / "bundle.json").read_text())["encoders"]["encode_image"]["onnx"]
    assert reason["reason"].startswith("max |diff| ") and reason["reason"].endswith(
        "exceeds -1e+00"
    )
    assert not list(bundle.glob("*.onnx"))


def test_onnx_without_the_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx -> ImportError
    encoders = {"encode_image": Encoder(_mean_colour, [("image", "uint8", ("b", 8, 4, 3))], "")}
    with pytest.raises(onnx_export.OnnxNotInstalledError, match=r"pip install 'reid_jax\[onnx\]'"):
        write_bundle(
            tmp_path / "b",
            task="toy",
            encoders=encoders,
            variables={"params": {"scale": jnp.float32(1.0)}},
            config={},
            preprocessing={},
            onnx=True,
        )
    assert not list(tmp_path.iterdir())


def test_max_pool_rewrite_equals_reduce_window_max():
    """The exact rewrite of max pooling (the primitive jax2onnx lowers to a 4-D ONNX pool) on
    padded, strided, dilated and uneven windows, negative values included."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
    for window, strides, padding, dilation in [
        ((1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)), (1, 1, 1, 1)),
        ((1, 2, 3, 1), (1, 1, 2, 1), ((0, 0), (0, 1), (2, 0), (0, 0)), (1, 2, 1, 1)),
        ((1, 1, 1, 2), (1, 1, 1, 1), ((0, 0),) * 4, (1, 1, 1, 1)),
    ]:
        params = dict(
            window_dimensions=window,
            window_strides=strides,
            padding=padding,
            base_dilation=(1, 1, 1, 1),
            window_dilation=dilation,
        )
        want = jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, window, strides, padding, window_dilation=dilation
        )
        got = jax.jit(lambda v, p=params: onnx_export.max_pool_by_slices(v, **p))(x)
        np.testing.assert_array_equal(got, want)
