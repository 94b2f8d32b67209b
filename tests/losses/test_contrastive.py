"""Tests for reid_jax.losses.contrastive against NumPy loops (aptm §4.1, §4.5, §4.6, §8.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from reid_jax.losses import contrastive


def _normalised(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _np_log_softmax(row):
    row = np.asarray(row, np.float64)
    m = max(row)
    return [r - m - np.log(sum(np.exp(x - m) for x in row)) for r in row]


def _np_itc(v, t, ids, tau):
    n = len(ids)
    s = [[float(np.dot(v[i], t[j])) / tau for j in range(n)] for i in range(n)]
    total_i2t = total_t2i = 0.0
    for i in range(n):
        positives = [j for j in range(n) if ids[j] == ids[i]]
        row = _np_log_softmax(s[i])
        col = _np_log_softmax([s[k][i] for k in range(n)])
        total_i2t -= sum(row[j] for j in positives) / len(positives)
        total_t2i -= sum(col[j] for j in positives) / len(positives)
    return (total_i2t / n + total_t2i / n) / 2


def _np_itc_grads(v, t, ids, tau):
    """Hand-derived: dL/dS = ((P_row - Q) + (P_col - Q)) / (2N), then the chain rule."""
    v, t = v.astype(np.float64), t.astype(np.float64)
    n = len(ids)
    s = v @ t.T / tau
    q = np.array([[ids[i] == ids[j] for j in range(n)] for i in range(n)], np.float64)
    q /= q.sum(1, keepdims=True)
    p_row = np.exp(s - s.max(1, keepdims=True))
    p_row /= p_row.sum(1, keepdims=True)
    p_col = np.exp(s - s.max(0, keepdims=True))
    p_col /= p_col.sum(0, keepdims=True)
    ds = ((p_row - q) + (p_col - q)) / (2 * n)
    return ds @ t / tau, ds.T @ v / tau, -np.sum(ds * s) / tau


@pytest.mark.parametrize(
    "ids", [[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 2, 2], [7, 7, 7, 7, 7, 7]], ids=str
)
def test_itc_loss_matches_numpy(ids):
    rng = np.random.default_rng(0)
    v, t = _normalised(rng, 6, 5), _normalised(rng, 6, 5)
    got = contrastive.itc_loss(v, t, jnp.asarray(ids), jnp.float32(0.07))
    np.testing.assert_allclose(got, _np_itc(v, t, ids, 0.07), rtol=1e-5)


def test_itc_tied_similarities_give_uniform_loss():
    v = np.tile(np.eye(1, 4, dtype=np.float32), (4, 1))  # every pair has similarity 1
    got = contrastive.itc_loss(v, v, jnp.asarray([0, 1, 2, 3]), jnp.float32(0.5))
    np.testing.assert_allclose(got, np.log(4), rtol=1e-6)


def _itc_grads(v, t, ids, tau, **kwargs):
    fn = jax.jit(jax.grad(lambda a, b, c: contrastive.itc_loss(a, b, ids, c, **kwargs), (0, 1, 2)))
    return fn(v, t, tau)


def test_itc_gradient_matches_hand_derivation_and_emulation_scales_features():
    rng = np.random.default_rng(1)
    v, t = _normalised(rng, 8, 4), _normalised(rng, 8, 4)
    ids = jnp.asarray([0, 0, 1, 2, 3, 3, 3, 4])
    tau = jnp.float32(0.1)
    want_v, want_t, want_tau = _np_itc_grads(v, t, np.asarray(ids), 0.1)
    gv, gt, gtau = _itc_grads(v, t, ids, tau)
    np.testing.assert_allclose(gv, want_v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gt, want_t, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gtau, want_tau, rtol=1e-4)
    ev, et, etau = _itc_grads(
        v, t, ids, tau, gradient_scale="per_device_emulation", num_reference_devices=4
    )
    np.testing.assert_allclose(ev, np.asarray(gv) / 4, rtol=1e-6)
    np.testing.assert_allclose(et, np.asarray(gt) / 4, rtol=1e-6)
    np.testing.assert_allclose(etau, gtau, rtol=1e-6)  # temperature keeps its full gradient
    value = contrastive.itc_loss(v, t, ids, tau, gradient_scale="per_device_emulation")
    np.testing.assert_allclose(value, contrastive.itc_loss(v, t, ids, tau), rtol=1e-6)


def test_itc_gradient_on_sharded_global_batch_equals_single_device():
    devices = np.array(jax.devices()[:8])
    assert len(devices) == 8
    mesh = jax.sharding.Mesh(devices, ("data",))
    rng = np.random.default_rng(2)
    v, t = _normalised(rng, 16, 4), _normalised(rng, 16, 4)
    ids = np.repeat(np.arange(8), 2)
    rng.shuffle(ids)
    rows = NamedSharding(mesh, P("data"))
    sharded = [jax.device_put(x, rows) for x in (v, t, ids)]
    grad_fn = jax.jit(
        jax.grad(lambda a, b, y: contrastive.itc_loss(a, b, y, jnp.float32(0.1)), (0, 1))
    )
    got_v, got_t = grad_fn(*sharded)
    want_v, want_t, _ = _np_itc_grads(v, t, ids, 0.1)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-4, atol=1e-6)
    emulated = jax.jit(
        jax.grad(
            lambda a, b, y: contrastive.itc_loss(
                a, b, y, 0.1, gradient_scale="per_device_emulation", num_reference_devices=4
            ),
            (0, 1),
        )
    )(*sharded)
    np.testing.assert_allclose(emulated[0], want_v / 4, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(emulated[1], want_t / 4, rtol=1e-4, atol=1e-7)


def test_itc_rejects_unknown_gradient_scale():
    x = jnp.ones((2, 2))
    with pytest.raises(ValueError, match="gradient_scale"):
        contrastive.itc_loss(x, x, jnp.arange(2), jnp.float32(1.0), gradient_scale="local")


def _np_iac(v, a, labels, tau, eps, group):
    b, k = labels.shape
    group_losses = []
    for g in range(b // group):
        prompts = a[g] if a.ndim == 3 else a
        total = 0.0
        for i in range(k):
            losses = []
            for r in range(g * group, (g + 1) * group):
                y = labels[r, i]
                if y < 0:
                    continue
                logits = [float(np.dot(v[r], prompts[2 * i + c])) / tau for c in range(2)]
                logp = _np_log_softmax(logits)
                target = [eps / 2, eps / 2]
                target[y] += 1 - eps
                losses.append(-(target[0] * logp[0] + target[1] * logp[1]))
            total += np.mean(losses) if losses else 0.0
        group_losses.append(total / k)
    return np.mean(group_losses)


@pytest.mark.parametrize("eps", [0.0, 0.4])
def test_iac_loss_matches_numpy_with_ignored_labels_and_groups(eps):
    rng = np.random.default_rng(3)
    v, a = _normalised(rng, 6, 5), _normalised(rng, 8, 5)  # K = 4 attributes
    labels = rng.integers(-1, 2, size=(6, 4))
    labels[:3, 2] = -1  # attribute 2 empty in group 0: contributes 0, still counted
    got = contrastive.iac_loss(
        v, a, jnp.asarray(labels), jnp.float32(0.2), group_size=3, label_smoothing=eps
    )
    np.testing.assert_allclose(got, _np_iac(v, a, labels, 0.2, eps, 3), rtol=1e-5)
    assert np.isfinite(float(got))
    per_group_prompts = np.stack([a, _normalised(rng, 8, 5)])
    got = contrastive.iac_loss(
        v, per_group_prompts, jnp.asarray(labels), 0.2, group_size=3, label_smoothing=eps
    )
    want = _np_iac(v, per_group_prompts, labels, 0.2, eps, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_iac_label_smoothing_targets_are_point_eight_point_two():
    v = np.array([[1.0, 0.0]], np.float32)
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # logits (1, 0) / tau with tau = 1
    got = contrastive.iac_loss(
        v, a, jnp.asarray([[1]]), jnp.float32(1.0), group_size=1, label_smoothing=0.4
    )
    log_p0, log_p1 = 1 - np.log(np.e + 1), -np.log(np.e + 1)
    np.testing.assert_allclose(got, -(0.2 * log_p0 + 0.8 * log_p1), rtol=1e-6)
    none = contrastive.iac_loss(
        v, a, jnp.asarray([[-1]]), jnp.float32(1.0), group_size=1, label_smoothing=0.0
    )
    assert float(none) == 0.0


def test_combine_objectives_weights_and_names():
    terms = {name: jnp.float32(i + 1) for i, name in enumerate(contrastive.FINETUNE_WEIGHTS)}
    total, weighted = contrastive.combine_objectives(terms, contrastive.FINETUNE_WEIGHTS)
    # itc 1 + 0.8 * itc_eda 2 + itm 3 + 0.8 * itm_eda 4 + mlm 5
    np.testing.assert_allclose(total, 1 + 1.6 + 3 + 3.2 + 5, rtol=1e-6)
    assert set(weighted) == set(terms)
    pre = {name: jnp.float32(1.0) for name in contrastive.PRETRAIN_WEIGHTS}
    np.testing.assert_allclose(
        contrastive.combine_objectives(pre, contrastive.PRETRAIN_WEIGHTS)[0], 3 + 0.8, rtol=1e-6
    )
    pa = {name: jnp.float32(2.0) for name in ("iac", "iam", "mam")}
    np.testing.assert_allclose(contrastive.combine_objectives(pa, contrastive.PA100K_WEIGHTS)[0], 6)
    with pytest.raises(ValueError, match="do not match"):
        contrastive.combine_objectives({"itc": jnp.float32(1)}, contrastive.FINETUNE_WEIGHTS)


def test_itc_is_vmappable_and_takes_a_python_temperature():
    rng = np.random.default_rng(4)
    v, t = _normalised(rng, 8, 3).reshape(2, 4, 3), _normalised(rng, 8, 3).reshape(2, 4, 3)
    ids = jnp.asarray([[0, 0, 1, 2], [3, 4, 5, 6]])
    batched = jax.vmap(lambda a, b, y: contrastive.itc_loss(a, b, y, 0.1))(v, t, ids)
    for i in range(2):
        np.testing.assert_allclose(
            batched[i], _np_itc(v[i], t[i], np.asarray(ids[i]), 0.1), rtol=1e-5
        )
