"""Tests of the SSAN task: loss weighting against NumPy, 8-device == 1-device steps, data and
evaluation plumbing on a tiny generated dataset with a tiny model."""

import importlib.util

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from reid_jax import sharding
from reid_jax.training import run_setup
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import ssan, ssan_eval


def _ssan_config(arg):
    spec = importlib.util.spec_from_file_location("ssan_config", "configs/ssan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


# XLA's CPU backend optimisations dominate compile time of these tiny models; both sides of
# every comparison are compiled alike, so the numerics under test do not change.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compile(jitted, *args):
    return jitted.lower(*args).compile(compiler_options=FAST_COMPILE)


_LOSS_CONFIG = _ssan_config("smoke").loss
_LOSS_TERMS = jax.jit(
    lambda out, y, key: ssan.loss_terms(
        out, y, key=key, epoch=jnp.int32(0), loss_config=_LOSS_CONFIG
    )
)


# ---------------------------------------------------------------- loss weighting vs NumPy


def _np_ce(logits, labels):
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], -1).mean()


def _np_cosine(a, b):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-8)
    return a @ b.T


def _np_two_sample_ranking(sim, margin):
    """ssan §3.3 for B = 2 with different labels: each anchor has exactly one negative, so
    the semi-hard pick is deterministic. Sum over both anchors and both directions."""
    total = 0.0
    for s in (sim, sim.T):
        for i, j in ((0, 1), (1, 0)):
            if s[i, i] - margin < s[i, j] < s[i, i]:
                total += margin - s[i, i] + s[i, j]
    return total


@pytest.mark.parametrize("seed", range(4))
def test_loss_terms_match_numpy(seed):
    rng = np.random.default_rng(seed)
    batch, parts, dim, classes = 2, 3, 4, 5
    labels = np.array([0, 1], np.int32)
    base = rng.normal(size=(batch, parts, dim))

    def feats(scale):  # captions near their image so that semi-hard triplets occur
        noisy = base + scale * rng.normal(size=base.shape)
        return {"global": noisy.mean(1), "parts": noisy, "relation": noisy[..., :2]}

    image, text, partner = feats(0.0), feats(0.6), feats(0.9)
    logits = {
        m: {
            "global": rng.normal(size=(batch, classes)),
            "parts": rng.normal(size=(batch, parts, classes)),
            "relation": rng.normal(size=(batch, parts, classes)),
        }
        for m in ("image", "text")
    }
    outputs = jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float32),
        {"image": image, "text": text, "partner": partner, "logits": logits},
    )
    terms = jax.device_get(_LOSS_TERMS(outputs, labels, jax.random.key(seed)))

    weights = {"global": 1.0, "parts": 0.5, "relation": 0.5}  # ssan §3.5
    want_id, want_rank = 0.0, 0.0
    for level, w in weights.items():

        def id_loss(modality, level=level):
            lg = logits[modality][level]
            if lg.ndim == 2:
                return _np_ce(lg, labels)
            return np.mean([_np_ce(lg[:, k], labels) for k in range(parts)])

        level_id = id_loss("image") + id_loss("text")
        # Epoch 0: strong margin 0.2; weak term margin 0.1, every anchor gated in, beta 0.1.
        level_rank = _np_two_sample_ranking(
            _np_cosine(image[level], text[level]), 0.2
        ) + 0.1 * _np_two_sample_ranking(_np_cosine(image[level], partner[level]), 0.1)
        np.testing.assert_allclose(terms[f"id_loss_{level}"], level_id, rtol=1e-5)
        np.testing.assert_allclose(terms[f"rank_loss_{level}"], level_rank, rtol=1e-4, atol=1e-6)
        want_id += w * level_id
        want_rank += w * level_rank
    np.testing.assert_allclose(terms["id_loss"], want_id, rtol=1e-5)
    np.testing.assert_allclose(terms["rank_loss"], want_rank, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(terms["loss"], want_id + want_rank, rtol=1e-5, atol=1e-6)
    hits = np.argmax(logits["image"]["global"], -1) == labels
    np.testing.assert_allclose(terms["accuracy_image"], hits.mean())


# ---------------------------------------------------------------- evaluation maths vs NumPy


def test_similarity_sums_level_cosines():
    rng = np.random.default_rng(0)
    query = {
        "global": rng.normal(size=(5, 4)),
        "parts": rng.normal(size=(5, 2, 3)),
        "relation": rng.normal(size=(5, 2, 2)),
    }
    gallery = {k: rng.normal(size=(7,) + v.shape[1:]) for k, v in query.items()}
    gallery["global"][3] = 0.0  # an all-zero feature must not produce NaN

    def cosine(a, b):
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        na = np.linalg.norm(a, axis=1, keepdims=True)
        nb = np.linalg.norm(b, axis=1, keepdims=True)
        return (a / np.where(na == 0, 1, na)) @ (b / np.where(nb == 0, 1, nb)).T

    levels = ("global", "parts", "relation")
    per_level = {lv: cosine(query[lv], gallery[lv]) for lv in levels}
    for lv in levels:
        np.testing.assert_allclose(
            ssan_eval.similarity(query, gallery, (lv,)), per_level[lv], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(
        ssan_eval.similarity(query, gallery, levels), sum(per_level.values()), rtol=1e-5, atol=1e-6
    )
    assert not np.isnan(ssan_eval.similarity(query, gallery, levels)).any()


def test_chance_r1():
    query_ids = np.array([1, 2, 3, 9])
    gallery_ids = np.array([1, 1, 2, 3, 3, 3, 4, 5])
    want = np.mean([2 / 8, 1 / 8, 3 / 8, 0 / 8]) * 100  # query 9 has no positive
    assert ssan_eval.chance_r1(query_ids, gallery_ids) == pytest.approx(want)


# ---------------------------------------------------------------- tiny model, tiny dataset


def _tiny_config(data_root):
    config = _ssan_config("smoke")
    config.data.root = str(data_root)
    config.data.max_length = 12
    config.model.update(
        dict(
            lstm_hidden=16,
            backbone_width=1 / 32,
            embed_dim=8,
            feature_dim=16,
            relation_dim=8,
            vocab_size=400,
        )
    )
    return config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = _tiny_config(tmp_path_factory.mktemp("data"))
    workdir = tmp_path_factory.mktemp("run")
    loader, info = ssan.make_train_data(config, workdir, shard_index=0, shard_count=1)
    model = ssan.create_model(config, info)
    init = jax.jit(lambda rng: ssan.init_variables(model, rng, config))
    variables = _compile(init, jax.random.key(0))(jax.random.key(0))
    return (
        ml_collections.ConfigDict(dict(config=config, workdir=str(workdir), info=info)),
        loader,
        model,
        jax.device_get(variables),
    )


def test_make_train_data(tiny):
    setup, loader, _, _ = tiny
    info, config = setup.info, setup.config
    # smoke sizes: 8 training identities x 3-4 images x 2 captions
    assert 8 * 3 * 2 <= info.num_examples <= 8 * 4 * 2
    assert info.steps_per_epoch == info.num_examples // config.train.batch_size
    assert info.num_classes == 8
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 64, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["caption"].shape == batch["partner_caption"].shape == (8, 12)
    assert (batch["length"] >= 1).all() and (batch["caption"] < config.model.vocab_size).all()


def _recording_tx():
    """An 'optimizer' that leaves params alone and keeps the last gradient as its state."""
    return optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads),
    )


def test_sharded_step_matches_single_device(tiny):
    setup, loader, model, variables = tiny
    batch = next(iter(loader))
    tx = _recording_tx()
    host_state = jax.device_get(create_train_state(variables, tx))
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(setup.config.mesh, devices=devices)
        step = run_setup.make_train_step(ssan, model, tx, setup.config, setup.info, mesh)
        args = (
            jax.device_put(host_state, sharding.replicated(mesh)),
            sharding.host_batch_to_global(batch, mesh),
            jax.random.key(7),
        )
        new_state, metrics = _compile(step, *args)(*args)
        results.append(jax.device_get((new_state, metrics)))
    (one, one_metrics), (eight, eight_metrics) = results
    assert one_metrics["rank_loss"] > 0  # the batch has semi-hard triplets
    for name in one_metrics:
        np.testing.assert_allclose(
            eight_metrics[name], one_metrics[name], rtol=2e-5, atol=1e-6, err_msg=name
        )
    grads_one, grads_eight = one.opt_state, eight.opt_state
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_one))
    for (path, g1), g8 in zip(
        jax.tree_util.tree_leaves_with_path(grads_one), jax.tree.leaves(grads_eight), strict=True
    ):
        np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-5 * scale, err_msg=str(path))
    for s1, s8 in zip(
        jax.tree.leaves(one.batch_stats), jax.tree.leaves(eight.batch_stats), strict=True
    ):
        np.testing.assert_allclose(s8, s1, rtol=1e-4, atol=1e-6)
    assert int(one.step) == int(eight.step) == 1
