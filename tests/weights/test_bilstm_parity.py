"""Bias-free BiLSTM against torch.nn.LSTM on packed sequences of different lengths, through
the official SSAN LSTM names (the converter's layout: transposes, direction stacking)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_helpers import variable_shapes

from reid_jax.models.backbones.bilstm import BiLstm
from reid_jax.weights.flat import unflatten_variables
from reid_jax.weights.mapping import apply_rules
from reid_jax.weights.ssan_official import rules


def test_bilstm_matches_packed_torch_lstm():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(16, 24, bidirectional=True, bias=False, batch_first=True)
    inputs = torch.randn(4, 9, 16)
    lengths = torch.tensor([9, 3, 6, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        inputs, lengths, batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        out, _ = lstm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=9)
    want = ((out[..., :24] + out[..., 24:]) / 2).numpy()

    model = BiLstm(24)
    expected = {
        k.replace("params/", "params/bilstm/"): v
        for k, v in variable_shapes(model, jnp.zeros((1, 9, 16)), jnp.ones((1,), jnp.int32)).items()
    }
    tensors = {f"TextExtract.lstm.{k}": v.numpy() for k, v in lstm.state_dict().items()}
    flat = apply_rules(tensors, rules(), expected, "lstm")
    variables = {"params": unflatten_variables(flat)["params"]["bilstm"]}
    got = jax.jit(model.apply)(variables, inputs.numpy(), lengths.numpy().astype(np.int32))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
    assert np.all(np.asarray(got)[1, 3:] == 0)  # padded steps are exact zeros


def _torch_packed_bilstm(lstm, inputs, lengths, total_length):
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        inputs, lengths, batch_first=True, enforce_sorted=False
    )
    out, _ = lstm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(
        out, batch_first=True, total_length=total_length
    )
    hidden = lstm.hidden_size
    return (out[..., :hidden] + out[..., hidden:]) / 2


@pytest.mark.parametrize(
    "num_steps, lengths",
    [
        (11, [5, 2, 7]),  # one backward chunk of 11 steps, longest 7
        (13, [5, 2, 13]),  # no chunk size divides 13: padded to 2 chunks of 12
        (20, [15, 2, 7]),  # 2 chunks of 10, both active
        (24, [3, 4, 9]),  # 2 chunks of 12, the second skipped
    ],
)
def test_bilstm_gradients_match_packed_torch_lstm_past_the_longest_caption(num_steps, lengths):
    """Steps past the batch's longest sequence are skipped (a loop over the active steps
    forward, skipped chunks backward, hand-written VJP); outputs and gradients (inputs and both
    kernels) must still equal PyTorch's packed LSTM, including a batch padded well beyond its
    longest sequence."""
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(8, 12, bidirectional=True, bias=False, batch_first=True)
    inputs = torch.randn(3, num_steps, 8, requires_grad=True)
    lengths = torch.tensor(lengths)
    cotangent = torch.randn(3, num_steps, 12)
    out = _torch_packed_bilstm(lstm, inputs, lengths, total_length=num_steps)
    (out * cotangent).sum().backward()
    want_grads = {
        "inputs": inputs.grad.numpy(),
        "input_kernel": np.stack(
            [lstm.weight_ih_l0.grad.numpy().T, lstm.weight_ih_l0_reverse.grad.numpy().T]
        ),
        "recurrent_kernel": np.stack(
            [lstm.weight_hh_l0.grad.numpy().T, lstm.weight_hh_l0_reverse.grad.numpy().T]
        ),
    }
    params = {
        "input_kernel": np.stack(
            [lstm.weight_ih_l0.detach().numpy().T, lstm.weight_ih_l0_reverse.detach().numpy().T]
        ),
        "recurrent_kernel": np.stack(
            [lstm.weight_hh_l0.detach().numpy().T, lstm.weight_hh_l0_reverse.detach().numpy().T]
        ),
    }
    model = BiLstm(12)
    x = inputs.detach().numpy()
    lengths_np = lengths.numpy().astype(np.int32)

    def objective(params, x):
        got = model.apply({"params": params}, x, lengths_np)
        return jnp.sum(got * cotangent.numpy()), got

    (_, got), (param_grads, input_grads) = jax.jit(
        jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
    )(params, x)
    np.testing.assert_allclose(np.asarray(got), out.detach().numpy(), atol=1e-5, rtol=0)
    assert np.all(np.asarray(got)[:, int(lengths.max()) :] == 0)
    np.testing.assert_allclose(np.asarray(input_grads), want_grads["inputs"], atol=1e-5, rtol=0)
    for name in ("input_kernel", "recurrent_kernel"):
        np.testing.assert_allclose(
            np.asarray(param_grads[name]), want_grads[name], atol=1e-5, rtol=0, err_msg=name
        )


def test_bilstm_all_empty_sequences_give_zeros():
    model = BiLstm(4)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    variables = model.init(jax.random.key(0), x, np.array([1, 1], np.int32))
    got = jax.jit(model.apply)(variables, x, np.array([0, 0], np.int32))
    assert got.shape == (2, 5, 4) and np.all(np.asarray(got) == 0)
