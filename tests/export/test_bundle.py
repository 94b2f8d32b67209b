"""Inference bundles: exported encoders, loaded in a fresh process that never imports
`reid_jax.models`, reproduce the model's embeddings (issue 12)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import cli
from reid_jax.data import transforms
from reid_jax.export.bundle import write_bundle
from reid_jax.export.run_export import write_task_bundle
from reid_jax.training.tasks import alignedreid, attribute_joint, ssan
from reid_jax.training.tasks.base import TrainDataInfo

REPO = Path(__file__).resolve().parents[2]
LOADER = """
import json, sys
import numpy as np
from reid_jax.inference import load_bundle
bundle = load_bundle(sys.argv[1])
inputs = np.load(sys.argv[2])
plan = json.loads(sys.argv[3])
out = {}
for encoder, names in plan.items():
    for key, value in bundle.encode(encoder, *[inputs[n] for n in names], batch_size=3).items():
        out[f"{encoder}/{key}"] = value
assert "reid_jax.models" not in sys.modules and "flax" not in sys.modules, sorted(sys.modules)
np.savez(sys.argv[4], **out)
"""


def _config(name, arg="smoke"):
    spec = importlib.util.spec_from_file_location(f"{name}_config", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _load_in_fresh_process(tmp_path, bundle, inputs, plan):
    np.savez(tmp_path / "inputs.npz", **inputs)
    command = [sys.executable, "-c", LOADER, str(bundle), str(tmp_path / "inputs.npz")]
    command += [json.dumps(plan), str(tmp_path / "out.npz")]
    subprocess.run(command, check=True, cwd=REPO, timeout=300)
    with np.load(tmp_path / "out.npz") as data:
        return dict(data)


def _images(config, count=5):
    height, width = config.data.image_size
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _unit(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _normalised(images, mean, std):
    return np.stack([transforms.normalize(im, mean, std) for im in images])


def test_alignedreid_ssan_and_attribute_bundles_reproduce_the_model(tmp_path):
    """Each task's encoders, exported with init variables and called in a fresh process on
    5 inputs (batches of 3: the symbolic batch takes 3 and 2), match the model applied here to
    the host-normalised inputs within 1e-5."""
    # AlignedReID: model_0's global feature.
    config = _config("alignedreid")
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=4)
    model = alignedreid.create_model(config, info)
    variables = alignedreid.init_variables(model, jax.random.key(0), config)
    bundle = write_task_bundle(tmp_path / "ar", alignedreid, model, variables, config, info)
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["encoders"]["encode_image"]["outputs"] == ["embedding"]
    images = _images(config)
    got = _load_in_fresh_process(tmp_path, bundle, {"image": images}, {"encode_image": ["image"]})
    x = _normalised(images, transforms.ALIGNEDREID_MEAN, transforms.ALIGNEDREID_STD)
    want = _unit(model.apply(variables, jnp.asarray(x), train=False)[0]["global"])
    np.testing.assert_allclose(got["encode_image/embedding"], want, atol=1e-5)

    # SSAN: image and text, the three levels concatenated.
    config = _config("ssan")
    model = ssan.create_model(config, info)
    variables = ssan.init_variables(model, jax.random.key(1), config)
    bundle = write_task_bundle(tmp_path / "ssan", ssan, model, variables, config, info)
    images = _images(config)
    rng = np.random.default_rng(1)
    length = config.data.max_length
    captions = rng.integers(1, config.model.vocab_size, (5, length)).astype(np.int32)
    lengths = np.array([length, 3, 1, 7, 5], np.int32)
    plan = {"encode_image": ["image"], "encode_text": ["caption", "length"]}
    inputs = {"image": images, "caption": captions, "length": lengths}
    got = _load_in_fresh_process(tmp_path, bundle, inputs, plan)

    def levels(feats):
        parts = [_unit(feats[k]) for k in ("global", "parts", "relation")]
        return np.concatenate(parts, axis=1) / np.sqrt(3.0)

    x = _normalised(images, transforms.SSAN_MEAN, transforms.SSAN_STD)
    image_feats = model.apply(variables, jnp.asarray(x), train=False, method=model.encode_image)
    text_feats = model.apply(variables, captions, lengths, train=False, method=model.encode_text)
    np.testing.assert_allclose(got["encode_image/embedding"], levels(image_feats), atol=1e-5)
    np.testing.assert_allclose(got["encode_text/embedding"], levels(text_feats), atol=1e-5)
    # 3 x dot = the summed cosine of the three levels (ssan §5.2).
    summed = sum(
        (_unit(image_feats[k]) * _unit(text_feats[k])).sum(1)
        for k in ("global", "parts", "relation")
    )
    dots = (got["encode_image/embedding"] * got["encode_text/embedding"]).sum(1)
    np.testing.assert_allclose(3 * dots, summed, atol=1e-5)

    # Attribute joint space: image (φ + heads) and attribute vectors (ψ).
    config = _config("attribute_joint")
    groups = ((0,), (1, 2, 3), (4, 5))
    info = TrainDataInfo(
        num_examples=8,
        steps_per_epoch=1,
        num_classes=2,
        extras={
            "groups": [list(g) for g in groups],
            "softmax_groups": [[1, 4]],
            "sid_attributes": [[0] * 6, [1] * 6],
        },
    )
    model = attribute_joint.create_model(config, info)
    variables = attribute_joint.init_variables(model, jax.random.key(2), config)
    bundle = write_task_bundle(tmp_path / "attr", attribute_joint, model, variables, config, info)
    images = _images(config)
    vectors = np.random.default_rng(2).integers(0, 2, (5, 6)).astype(np.float32)
    plan = {"encode_image": ["image"], "encode_attributes": ["attributes"]}
    got = _load_in_fresh_process(tmp_path, bundle, {"image": images, "attributes": vectors}, plan)
    x = _normalised(images, transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    out = model.apply(variables, jnp.asarray(x), train=False, method=model.encode_image)
    np.testing.assert_allclose(got["encode_image/embedding"], _unit(out["embedding"]), atol=1e-5)
    np.testing.assert_allclose(
        got["encode_image/attribute_logits"], out["attribute_logits"], atol=1e-5
    )
    concepts = model.apply(variables, vectors, train=False, method=model.encode_attributes)
    np.testing.assert_allclose(got["encode_attributes/embedding"], _unit(concepts), atol=1e-5)


def test_aptm_bundle_reproduces_its_two_stages(tmp_path):
    """APTM's image and text ITC features and its ITM pair scorer, exported and called in a
    fresh process (5 rows in batches of 3 and 2), match the model within 1e-5."""
    from reid_jax.data import aptm_examples
    from reid_jax.training.tasks import aptm

    config = _config("aptm")
    info = TrainDataInfo(
        num_examples=8, steps_per_epoch=1, num_classes=4, extras={"vocab_size": 40}
    )
    model = aptm.create_model(config, info)
    variables = aptm.init_variables(model, jax.random.key(3), config)
    bundle = write_task_bundle(tmp_path / "aptm", aptm, model, variables, config, info)
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["encoders"]["score_pairs"]["outputs"] == ["itm_logit"]
    assert manifest["preprocessing"]["text_tokenizer"] == "wordpiece"
    images = _images(config)
    rng = np.random.default_rng(3)
    length = config.data.max_tokens
    ids = rng.integers(5, 40, (5, length)).astype(np.int32)
    lengths = np.array([length, 3, 2, 7, 5])
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    plan = {
        "encode_image": ["image"],
        "encode_text": ["ids", "mask"],
        "score_pairs": ["image", "ids", "mask"],
    }
    got = _load_in_fresh_process(
        tmp_path, bundle, {"image": images, "ids": ids, "mask": mask}, plan
    )

    mean, std = aptm_examples.NORMALISATION[config.data.test_normalisation]
    x = jnp.asarray(_normalised(images, mean, std))
    image = model.apply(variables, x, train=False, method=model.encode_image)
    text = model.apply(variables, ids, mask, train=False, method=model.encode_text)
    pairs = model.apply(
        variables,
        image["image_tokens"],
        text["text_tokens"],
        mask,
        train=False,
        method=model.match,
    )
    np.testing.assert_allclose(got["encode_image/embedding"], image["image_feats"], atol=1e-5)
    np.testing.assert_allclose(got["encode_text/embedding"], text["text_feats"], atol=1e-5)
    np.testing.assert_allclose(got["score_pairs/itm_logit"], pairs["itm_logits"][:, 1], atol=1e-5)
    assert np.ptp(got["score_pairs/itm_logit"]) > 1e-4  # the pairs differ, so does the score


def test_bundle_inputs_are_checked_and_the_folder_is_never_half_written(tmp_path):
    from reid_jax.inference import BundleError, load_bundle

    config = _config("alignedreid")
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=4)
    model = alignedreid.create_model(config, info)
    variables = alignedreid.init_variables(model, jax.random.key(0), config)
    encoders = alignedreid.export_encoders(model, config, info)
    kwargs = dict(task="alignedreid", encoders=encoders, variables=variables, config={})
    bundle = write_bundle(tmp_path / "b", preprocessing={}, **kwargs)
    with pytest.raises(FileExistsError):
        write_bundle(tmp_path / "b", preprocessing={}, **kwargs)
    loaded = load_bundle(bundle)
    with pytest.raises(BundleError, match="expected uint8"):
        loaded.encode("encode_image", np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(BundleError, match="no encoder 'encode_text'"):
        loaded.encode("encode_text", np.zeros((1, 4), np.int32))
    # A failure during export leaves nothing behind: no bundle, no temporary folder.
    broken = dict(kwargs, encoders={"encode_image": encoders["encode_image"], "bad": None})
    with pytest.raises(AttributeError):
        write_bundle(tmp_path / "c", preprocessing={}, **broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)


@pytest.mark.slow
def test_export_command_reproduces_the_runs_evaluation_features(tmp_path, capsys):
    """reid-jax train (AlignedReID smoke) -> reid-jax export --onnx -> embeddings of the run's
    gallery images, host-resized as the evaluation does, equal the run's saved evaluation
    features (normalised) within 1e-5, and within 1e-4 from the ONNX file under onnxruntime."""
    import ml_collections
    import onnxruntime

    from reid_jax.evaluation.features_file import load_features
    from reid_jax.inference import load_bundle
    from reid_jax.training import loop

    run, out = tmp_path / "run", tmp_path / "bundle"
    config = _config("alignedreid")
    config.data.root = str(tmp_path / "data")
    config.data.embedded_image_size = (64, 32)
    config.data.embedded_sizes = ml_collections.ConfigDict(
        dict(
            cuhk_train_ids=2,
            cuhk_val_ids=0,
            cuhk_test_ids=1,
            mals_pairs=0,
            market_train_ids=6,
            market_test_ids=3,
            market_distractors=2,
            market_junk=1,
        )
    )
    config.eval.rerank = False
    config.checkpoint.async_save = False
    loop.train_and_evaluate(config, run)
    assert cli.main(["export", "--workdir", str(run), "--out", str(out), "--onnx"]) == 0
    assert re.search(
        r"^onnx: encode_image.onnx \(max \|diff\| \S+ vs jax\)$", capsys.readouterr().out, re.M
    )
    bundle = load_bundle(out)
    assert bundle.task == "alignedreid"
    size = tuple(bundle.preprocessing["image_size"])
    features = load_features(str(run / "eval" / "features.npz"))
    paths = features.gallery_paths[:6]
    images = np.stack([transforms.resize_bilinear(transforms.load_rgb(p), size) for p in paths])
    got = bundle.encode("encode_image", images)["embedding"]
    want = _unit(features.gallery_features["global"][: len(paths)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    session = onnxruntime.InferenceSession(str(out / "encode_image.onnx"))
    (onnx_got,) = session.run(["embedding"], {"image": images})
    np.testing.assert_allclose(onnx_got, want, atol=1e-4)
