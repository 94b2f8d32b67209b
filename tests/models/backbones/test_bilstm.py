"""Tests for reid_jax.models.backbones.bilstm against an independent NumPy LSTM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models.backbones.bilstm import BiLstm, reversal_index

E, H = 5, 6


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_lstm(x, w_ih, w_hh):
    """Bias-free PyTorch LSTM (gates i, f, g, o) over x [L, E] from a zero state -> [L, H]."""
    hidden = w_hh.shape[0]
    h, c, out = np.zeros(hidden), np.zeros(hidden), []
    for x_t in x:
        z = x_t @ w_ih + h @ w_hh
        i, f, g, o = z[:hidden], z[hidden : 2 * hidden], z[2 * hidden : 3 * hidden], z[3 * hidden :]
        c = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(g)
        h = np_sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.asarray(out).reshape(len(x), hidden)


def np_bilstm(x, lengths, w_ih, w_hh):
    """Packed-sequence BiLSTM, directions averaged, zeros at padded steps."""
    out = np.zeros(x.shape[:2] + (w_hh.shape[1],))
    for b, length in enumerate(lengths):
        valid = np.asarray(x[b, :length], np.float64)
        forward = np_lstm(valid, w_ih[0], w_hh[0])
        backward = np_lstm(valid[::-1], w_ih[1], w_hh[1])[::-1]
        out[b, :length] = (forward + backward) / 2
    return out


@pytest.fixture(scope="module")
def apply_fn():
    model = BiLstm(hidden_size=H)
    return jax.jit(lambda params, x, lengths: model.apply({"params": params}, x, lengths))


def random_params(seed, scale=0.6):
    rng = np.random.default_rng(seed)
    return {
        "input_kernel": rng.uniform(-scale, scale, (2, E, 4 * H)).astype(np.float32),
        "recurrent_kernel": rng.uniform(-scale, scale, (2, H, 4 * H)).astype(np.float32),
    }


def test_init_shapes_and_bounds():
    params = BiLstm(hidden_size=H).init(
        jax.random.key(0, impl="rbg"), jnp.zeros((2, 3, E)), jnp.array([3, 1])
    )["params"]
    assert params["input_kernel"].shape == (2, E, 4 * H)
    assert params["recurrent_kernel"].shape == (2, H, 4 * H)
    bound = 1 / np.sqrt(H)
    for w in params.values():
        assert np.all(np.abs(w) <= bound) and np.abs(w).max() > 0.8 * bound


def test_reversal_index_is_a_per_sample_involution():
    lengths = np.array([4, 0, 6, 1])
    rev = np.asarray(reversal_index(jnp.asarray(lengths), 6))
    for b, length in enumerate(lengths):
        expected = list(range(length - 1, -1, -1)) + list(range(length, 6))
        assert rev[b].tolist() == expected
        assert rev[b][rev[b]].tolist() == list(range(6))


def test_matches_numpy_reference_with_exact_zero_padding(apply_fn):
    rng = np.random.default_rng(1)
    params = random_params(2)
    x = rng.normal(size=(5, 7, E)).astype(np.float32)
    lengths = np.array([7, 3, 1, 0, 5], np.int32)
    out = np.asarray(apply_fn(params, x, lengths))
    expected = np_bilstm(x, lengths, params["input_kernel"], params["recurrent_kernel"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    for b, length in enumerate(lengths):
        assert np.all(out[b, length:] == 0.0)


def test_padding_values_and_extra_padded_steps_do_not_change_valid_outputs(apply_fn):
    rng = np.random.default_rng(3)
    params = random_params(4)
    lengths = np.array([6, 2, 4], np.int32)
    x = rng.normal(size=(3, 6, E)).astype(np.float32)
    for b, length in enumerate(lengths):
        x[b, length:] = 0.0
    base = np.asarray(apply_fn(params, x, lengths))
    junk = x.copy()
    for b, length in enumerate(lengths):
        junk[b, length:] = rng.normal(size=(6 - length, E)) * 100
    longer = np.concatenate([junk, rng.normal(size=(3, 4, E)).astype(np.float32)], axis=1)
    for variant in (junk, longer):
        out = np.asarray(apply_fn(params, variant, lengths))
        np.testing.assert_allclose(out[:, :6], base, rtol=1e-6, atol=1e-7)
        for b, length in enumerate(lengths):
            assert np.all(out[b, length:] == 0.0)


def test_backward_direction_dependencies(apply_fn):
    # With zero forward weights the forward output is exactly 0 (all gates 0.5, g = 0), so the
    # averaged output is half the backward direction.
    params = random_params(5)
    params["input_kernel"][0] = 0.0
    params["recurrent_kernel"][0] = 0.0
    rng = np.random.default_rng(6)
    length = 5
    x = rng.normal(size=(1, 8, E)).astype(np.float32)
    lengths = np.array([length], np.int32)
    base = np.asarray(apply_fn(params, x, lengths))[0]
    for j in range(length):
        perturbed = x.copy()
        perturbed[0, j] += 1.0
        out = np.asarray(apply_fn(params, perturbed, lengths))[0]
        assert np.abs(out[0] - base[0]).max() > 1e-4, f"step 0 ignores token {j}"
        changed_last = np.abs(out[length - 1] - base[length - 1]).max() > 0
        assert changed_last == (j == length - 1), f"step L-1 vs token {j}"


def test_reversing_valid_tokens_with_tied_directions_reverses_outputs(apply_fn):
    params = random_params(7)
    params["input_kernel"][1] = params["input_kernel"][0]
    params["recurrent_kernel"][1] = params["recurrent_kernel"][0]
    rng = np.random.default_rng(8)
    lengths = np.array([6, 3, 1], np.int32)
    x = rng.normal(size=(3, 6, E)).astype(np.float32)
    reversed_x = x.copy()
    for b, length in enumerate(lengths):
        reversed_x[b, :length] = x[b, :length][::-1]
    out = np.asarray(apply_fn(params, x, lengths))
    out_rev = np.asarray(apply_fn(params, reversed_x, lengths))
    for b, length in enumerate(lengths):
        np.testing.assert_allclose(out_rev[b, :length], out[b, :length][::-1], atol=1e-6)
        assert np.all(out_rev[b, length:] == 0.0)


def test_backward_chunk_divides_the_steps_where_it_can():
    from reid_jax.models.backbones.bilstm import backward_chunk

    assert [backward_chunk(t) for t in (100, 56, 20, 24, 11, 13, 3)] == [10, 8, 10, 12, 11, 12, 12]
