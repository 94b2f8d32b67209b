"""Tests of the AlignedReID task: losses vs NumPy, mutual step, end-to-end smoke, full-size shapes.

The end-to-end fixture trains configs/alignedreid.py:smoke,mutual for 2 steps through the real
loop on a tiny embedded dataset and evaluates; the mutual-step test reuses its run folder.
Finite local-distance gradients (identical inputs, huge distances) are tested in
tests/test_distances.py and tests/losses/test_triplet.py.
"""

import importlib.util
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from reid_jax import config_lib
from reid_jax.data.records import CameraImage
from reid_jax.training import checkpoint, loop, optim
from reid_jax.training import step as step_lib
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import TASKS, alignedreid, alignedreid_eval
from reid_jax.training.tasks.base import TrainDataInfo

CONFIG_FILE = Path(__file__).parents[2] / "configs" / "alignedreid.py"
TINY_SIZES = dict(
    cuhk_train_ids=2,
    cuhk_val_ids=0,
    cuhk_test_ids=1,
    cuhk_images_per_id=(2, 2),
    market_train_ids=8,
    market_test_ids=5,
    market_train_images_per_id=(3, 6),
    market_gallery_images_per_id=(3, 5),
    market_distractors=4,
    market_junk=3,
    mals_pairs=0,
)


def _config_module():
    spec = importlib.util.spec_from_file_location("alignedreid_config", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loss_config(**overrides):
    base = dict(
        global_margin=0.3,
        local_margin=0.3,
        global_weight=1.0,
        local_weight=0.7,
        id_weight=0.5,
        local_own_hard_samples=False,
        probability_mutual_weight=0.4,
        global_distance_mutual_weight=0.6,
        local_distance_mutual_weight=0.0,
    )
    return ml_collections.ConfigDict({**base, **overrides})


# ---------------------------------------------------------------- NumPy re-derivations


def _np_dist(x):
    d2 = (x[:, None, :] - x[None, :, :]) ** 2
    return np.sqrt(np.maximum(d2.sum(-1), 1e-12))


def _np_mine(dist, labels):
    """Farthest positive (self included), nearest negative, first index on ties."""
    pos, neg = [], []
    for i in range(len(labels)):
        same = labels == labels[i]
        pos.append(int(np.argmax(np.where(same, dist[i], -np.inf))))
        neg.append(int(np.argmin(np.where(same, np.inf, dist[i]))))
    return np.array(pos), np.array(neg)


def _np_local(f, g):
    d = np.tanh(np.sqrt(np.maximum(((f[:, None] - g[None]) ** 2).sum(-1), 1e-12)) / 2)
    s = np.zeros_like(d)
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            prev = ([s[i - 1, j]] if i else []) + ([s[i, j - 1]] if j else [])
            s[i, j] = d[i, j] + (min(prev) if prev else 0.0)
    return s[-1, -1]


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_totals(outputs, labels, cfg, normalize):
    """Per-model totals of alignedreid §4.5 + §5.2, written independently of the task."""
    b = len(labels)
    hinge = lambda ap, an, m: np.mean(np.maximum(0.0, m + ap - an))  # noqa: E731
    dists, local_dists, logps, own = [], [], [], []
    for out in outputs:
        g, loc = (np.asarray(out["global"], np.float64), np.asarray(out["local"], np.float64))
        if normalize:
            g = g / (np.linalg.norm(g, axis=-1, keepdims=True) + 1e-12)
            loc = loc / (np.linalg.norm(loc, axis=-1, keepdims=True) + 1e-12)
        dist = _np_dist(g)
        pos, neg = _np_mine(dist, labels)
        rows = np.arange(b)
        total = cfg.global_weight * hinge(dist[rows, pos], dist[rows, neg], cfg.global_margin)
        full_local = np.array([[_np_local(loc[i], loc[j]) for j in range(b)] for i in range(b)])
        if cfg.local_own_hard_samples:
            pos, neg = _np_mine(full_local, labels)
        total += cfg.local_weight * hinge(
            full_local[rows, pos], full_local[rows, neg], cfg.local_margin
        )
        logp = _np_log_softmax(np.asarray(out["logits"], np.float64))
        total += cfg.id_weight * -np.mean(logp[rows, labels])
        dists.append(dist), local_dists.append(full_local), logps.append(logp), own.append(total)
    if len(outputs) == 1:
        return own
    totals = []
    for i in range(len(outputs)):
        peers = [j for j in range(len(outputs)) if j != i]
        kl = np.mean([np.mean(np.sum(np.exp(logps[j]) * (logps[j] - logps[i]), -1)) for j in peers])
        gdm = np.mean([np.mean((dists[i] - dists[j]) ** 2) for j in peers])
        ldm = np.mean([np.mean((local_dists[i] - local_dists[j]) ** 2) for j in peers])
        totals.append(
            own[i]
            + cfg.probability_mutual_weight * kl
            + cfg.global_distance_mutual_weight * gdm
            + cfg.local_distance_mutual_weight * ldm
        )
    return totals


def _random_outputs(num_models, b=8, c=6, stripes=4, local_dim=3, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        {
            "global": rng.normal(size=(b, c)).astype(np.float32),
            "local": rng.normal(size=(b, stripes, local_dim)).astype(np.float32),
            "logits": rng.normal(size=(b, classes)).astype(np.float32),
        }
        for _ in range(num_models)
    )


@pytest.mark.parametrize("own_hard, normalize, ldm", [(False, False, 0.0), (True, True, 0.3)])
def test_loss_terms_match_numpy(own_hard, normalize, ldm):
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    outputs = _random_outputs(2)
    cfg = _loss_config(local_own_hard_samples=own_hard, local_distance_mutual_weight=ldm)
    fn = jax.jit(lambda o, y: alignedreid.loss_terms(o, y, loss_config=cfg, normalize=normalize))
    got = fn(outputs, jnp.asarray(labels))
    want = _np_totals(outputs, labels, cfg, normalize)
    for i in range(2):
        np.testing.assert_allclose(got[f"model_{i}/loss"], want[i], rtol=2e-5)
    np.testing.assert_allclose(got["loss"], sum(want), rtol=2e-5)
    np.testing.assert_allclose(
        got["model_0/global_distance_mutual"], got["model_1/global_distance_mutual"], rtol=1e-6
    )


def test_single_model_has_no_mutual_terms_and_zero_weights_skip_terms():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    outputs = _random_outputs(1, seed=3)
    cfg = _loss_config(local_weight=0.0, id_weight=0.0)
    got = alignedreid.loss_terms(outputs, jnp.asarray(labels), loss_config=cfg, normalize=False)
    assert not any("mutual" in k for k in got)
    assert float(got["model_0/local_triplet"]) == 0.0 and float(got["model_0/id"]) == 0.0
    np.testing.assert_allclose(got["loss"], _np_totals(outputs, labels, cfg, False)[0], rtol=2e-5)


def test_local_distance_mutual_needs_own_hard_samples():
    outputs = _random_outputs(2)
    cfg = _loss_config(local_distance_mutual_weight=1.0)
    with pytest.raises(ValueError, match="local_own_hard_samples"):
        alignedreid.loss_terms(outputs, jnp.arange(8) // 2, loss_config=cfg, normalize=False)


def test_exp_schedule_matches_spec_formula():
    """alignedreid §6.2 with 1-based epochs: base for e < s, else 0.001^((e+1-s)/(T+1-s))."""
    cfg = ml_collections.ConfigDict(
        dict(schedule="exp", decay_epochs=(5,), decay_factor=0.001, warmup_steps=0)
    )
    spe, total_epochs, s = 3, 12, 6  # 0-based decay_epochs[0] = 5 -> 1-based s = 6
    sched = jax.jit(optim.make_schedule(cfg, steps_per_epoch=spe, total_steps=spe * total_epochs))
    for step in range(spe * total_epochs):
        e = step // spe + 1
        want = 1.0 if e < s else 0.001 ** ((e + 1 - s) / (total_epochs + 1 - s))
        np.testing.assert_allclose(float(sched(step)), want, rtol=1e-5)


# ---------------------------------------------------------------- configs


def test_config_variants_validate():
    module = _config_module()
    for dataset in alignedreid.DATASETS:
        for extra in ("", ",mutual", ",smoke", ",mutual,smoke"):
            config = module.get_config(dataset + extra)
            config.lock()
            if dataset != "embedded":
                with pytest.raises(config_lib.ConfigError, match=r"config\.data\.root"):
                    config_lib.validate(config)
                config.data.root = "/data/x"
            config_lib.validate(config)
            assert config.model.num_models == (2 if "mutual" in extra else 1)
    paper = module.get_config("market1501")
    assert (paper.model.backbone_depth, tuple(paper.data.image_size)) == (50, (256, 128))
    assert (paper.train.batch_size, paper.data.images_per_identity) == (128, 4)
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.schedule) == (2e-4, 5e-4, "exp")
    assert (paper.train.num_epochs, tuple(paper.optim.decay_epochs)) == (300, (150,))
    assert (paper.loss.global_margin, paper.loss.local_weight, paper.loss.id_weight) == (0.3, 0, 0)
    with pytest.raises(ValueError, match="unknown variant"):
        module.get_config("market")


def test_train_labels_sorted_ascending_and_pk_batch_checked():
    records = [
        CameraImage(f"/x/{pid}_{i}.jpg", pid, 0, "train")
        for i, pid in enumerate([1501, 7, 7, 42, 1501])
    ]
    np.testing.assert_array_equal(alignedreid.train_labels(records), [2, 0, 0, 1, 2])
    config = _config_module().get_config("smoke")
    config.train.batch_size = 10  # not a multiple of K = 4
    with pytest.raises(ValueError, match="images_per_identity"):
        alignedreid.make_train_data(config, "/unused", shard_index=0, shard_count=1)


# ---------------------------------------------------------------- end to end


class _TraceCounter:
    """The alignedreid task, counting how often its train step is traced."""

    def __init__(self):
        self.traces = 0

    def __getattr__(self, name):
        return getattr(alignedreid, name)

    def loss_fn(self, *args, **kwargs):
        self.traces += 1
        return alignedreid.loss_fn(*args, **kwargs)


def _smoke_config(tmp_root):
    config = _config_module().get_config("smoke,mutual")
    config.data.root = str(tmp_root / "embedded")
    config.data.embedded_image_size = (64, 32)
    config.data.embedded_sizes = TINY_SIZES
    config.eval.rerank_k1 = 4  # the tiny gallery has ~25 images
    config.eval.rerank_k2 = 2
    config.checkpoint.async_save = False
    config.checkpoint.every_steps = 1  # keep steps 1 and 2: one jitted step apart
    return config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignedreid")
    config, task = _smoke_config(root), _TraceCounter()
    results = loop.train_and_evaluate(config, root / "run", task=task)
    return types.SimpleNamespace(config=config, workdir=root / "run", results=results, task=task)


@pytest.mark.slow
def test_smoke_mutual_run_trains_and_evaluates(smoke_run):
    workdir, results = smoke_run.workdir, smoke_run.results
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for record in train:
        for i in range(2):
            for term in ("loss", "global_triplet", "local_triplet", "id", "global_distance_mutual"):
                assert np.isfinite(record[f"train/model_{i}/{term}"])
    kinds = {f"{k}{s}" for k in alignedreid_eval.KINDS for s in ("", "_rerank")}
    for i in range(2):
        assert set(results[f"model_{i}"]) == kinds
        for metrics in results[f"model_{i}"].values():
            assert 0.0 <= metrics["R1"] <= metrics["R5"] <= metrics["R10"] <= 100.0
            assert 0.0 < metrics["mAP"] <= 100.0
    assert results["num_gallery"] < sum(
        1
        for _ in (Path(smoke_run.config.data.root) / "Market-1501" / "bounding_box_test").iterdir()
    )  # -1 gone
    assert 0.0 < results["chance_R1"] < 100.0
    saved = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert saved["last"] == {"step": 2, "metrics": results}
    assert (workdir / "eval" / "rank_list_first.png").stat().st_size > 0
    assert (workdir / "eval" / "rank_list_worst.html").stat().st_size > 0


@pytest.mark.slow  # shares the ~30 s smoke_run fixture
def test_mutual_models_share_one_jitted_step_and_stay_distinct(smoke_run):
    # Two steps through the loop traced the task's step once: one jitted function updates both.
    assert smoke_run.task.traces == 1
    manager = checkpoint.make_checkpoint_manager(
        smoke_run.workdir, smoke_run.config.checkpoint, with_data=False
    )
    try:
        states = [
            manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
                "state"
            ]
            for step in (1, 2)
        ]
    finally:
        manager.close()
    assert [int(s["step"]) for s in states] == [1, 2]
    assert set(states[1]["params"]) == {"model_0", "model_1"}

    def flat(tree):
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])

    before = [flat(states[0]["params"][f"model_{i}"]) for i in range(2)]
    after = [flat(states[1]["params"][f"model_{i}"]) for i in range(2)]
    for i in range(2):
        assert not np.allclose(before[i], after[i])  # step 2 updated both models
    assert not np.allclose(after[0], after[1])  # which stay two distinct models
    for name in ("backbone", "local_conv", "classifier"):  # independently initialised
        assert not np.allclose(
            flat(states[0]["params"]["model_0"][name]), flat(states[0]["params"]["model_1"][name])
        )


def test_distance_kinds_and_chance_level():
    rng = np.random.default_rng(0)
    x = {
        "global": rng.normal(size=(5, 4)).astype(np.float32),
        "local": rng.normal(size=(5, 3, 2)).astype(np.float32),
    }
    y = {
        "global": rng.normal(size=(7, 4)).astype(np.float32),
        "local": rng.normal(size=(7, 3, 2)).astype(np.float32),
    }
    glob = np.sqrt(((x["global"][:, None] - y["global"][None]) ** 2).sum(-1))
    local = np.array([[_np_local(a, b) for b in y["local"]] for a in x["local"]])
    dist = {
        k: alignedreid_eval.distance_matrix(k, x, y, local_block=4) for k in alignedreid_eval.KINDS
    }
    np.testing.assert_allclose(dist["global"], glob, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist["local"], local, rtol=1e-5)
    np.testing.assert_allclose(dist["global_local"], glob + local, rtol=1e-5)
    # Query 0 (id 1, cam 0): gallery id 1 cam 0 is junk, one valid positive among 3 candidates.
    q_ids, q_cams = np.array([1, 2]), np.array([0, 0])
    g_ids, g_cams = np.array([1, 1, 0, 3]), np.array([0, 1, 2, 1])
    assert alignedreid_eval.chance_r1(q_ids, g_ids, q_cams, g_cams) == pytest.approx(100 / 3)


# ---------------------------------------------------------------- full size


def test_full_size_mutual_step_shapes():
    """ResNet-50 at 256 x 128, PK 32 x 4, two models: shapes only (jax.eval_shape)."""
    config = _config_module().get_config("market1501,mutual")
    info = TrainDataInfo(num_examples=12936, steps_per_epoch=23, num_classes=751)
    model = TASKS["alignedreid"].create_model(config, info)
    variables = jax.eval_shape(
        lambda key: alignedreid.init_variables(model, key, config), jax.random.key(0)
    )
    images = jax.ShapeDtypeStruct((128, 256, 128, 3), jnp.float32)
    outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    assert len(outputs) == 2
    for out in outputs:
        assert out["global"].shape == (128, 2048)
        assert out["local"].shape == (128, 8, 128)  # 8 stripes at 256 x 128 (§2)
        assert out["logits"].shape == (128, 751)
    sizes = [
        sum(x.size for x in jax.tree.leaves(variables["params"][f"model_{i}"])) for i in range(2)
    ]
    # ResNet-50 trunk 23.5M + local conv 2048x128+128 + classifier 2048x751+751.
    assert sizes[0] == sizes[1] and 23.4e6 < sizes[0] - 2048 * 751 - 751 - 2048 * 128 < 23.6e6
    tx = optim.make_optimizer(
        config.optim, variables["params"], steps_per_epoch=23, total_steps=23 * 300
    )
    state = jax.eval_shape(lambda v: create_train_state(v, tx), variables)
    batch = {"image": images, "label": jax.ShapeDtypeStruct((128,), jnp.int32)}
    new_state, metrics = jax.eval_shape(
        lambda s, b, k: step_lib.gradient_step(
            alignedreid, model, s, b, k, tx=tx, config=config, info=info
        ),
        state,
        batch,
        jax.random.key(0),
    )
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert all(m.shape == () for m in metrics.values())
    assert {"loss", "model_0/global_distance_mutual", "model_1/loss"} <= set(metrics)
