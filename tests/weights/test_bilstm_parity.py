"""Bias-free BiLSTM against torch.nn.LSTM on packed sequences of different lengths, through
the official SSAN LSTM names (the converter's layout: transposes, direction stacking)."""

import jax
import jax.numpy as jnp
import numpy as np
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
