"""Bias-free bidirectional LSTM with exact variable-length handling (ssan §2.4, §7.3).

Reproduces PyTorch ``nn.LSTM(E, H, bidirectional=True, bias=False)`` run on packed sequences,
with the two directions averaged: the forward direction reads tokens ``0 .. L-1``, the backward
direction starts at token ``L-1`` from a zero state, and steps ``t >= L`` output exact zeros.

Both directions run in ONE ``lax.scan`` (a batched [2, B, H] x [2, H, 4H] recurrent matmul); the
input projections of all steps are computed up front with one matmul. The backward direction is
fed the sequence gathered with the per-sample involution ``rev(t) = L-1-t`` (t < L) else ``t``,
and its outputs are gathered back with the same map.

Parameter names (a file format); direction 0 = forward, 1 = backward::

    PyTorch                                   Flax
    weight_ih_l0 / weight_ih_l0_reverse [4H, E]   input_kernel     [2, E, 4H]  (transposed)
    weight_hh_l0 / weight_hh_l0_reverse [4H, H]   recurrent_kernel [2, H, 4H]  (transposed)

Gate order along 4H is PyTorch's (i, f, g, o).

``remat=True`` checkpoints the scan body with ``dots_saveable``: the backward pass keeps each
step's carry and recurrent-matmul output and recomputes the gate nonlinearities instead of
storing them (at T = 100, 4B = 256, H = 2048: 7.7 instead of 10.1 GiB of XLA temporaries for the
BiLSTM's gradient, with no extra matmul; recomputing the matmul too would reach 6.2 GiB for
+1/3 of the recurrent FLOPs).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def reversal_index(lengths: jnp.ndarray, num_steps: int) -> jnp.ndarray:
    """Per-sample index map that reverses the valid prefix and keeps padding in place.

    Args:
      lengths: [B] int valid lengths L (0 <= L <= T).
      num_steps: T.

    Returns:
      [B, T] int32 ``rev[b, t] = L_b - 1 - t`` for ``t < L_b`` else ``t`` (an involution).
    """
    steps = jnp.arange(num_steps, dtype=jnp.int32)[None, :]
    lengths = jnp.asarray(lengths, jnp.int32)[:, None]
    return jnp.where(steps < lengths, lengths - 1 - steps, steps)


def _uniform_init(hidden_size: int):
    bound = 1.0 / hidden_size**0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BiLstm(nn.Module):
    """One-layer bias-free bidirectional LSTM whose two directions are averaged.

    Attributes:
      hidden_size: H per direction (2048 in SSAN).
      dtype: compute dtype of the matmuls; gates and cell state are float32.
      remat: recompute each step's gate nonlinearities in the backward pass (matmul outputs are
        kept) instead of storing them.
    """

    hidden_size: int = 2048
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
        """Runs both directions over the valid prefix of every sequence.

        Args:
          inputs: [B, T, E] float embedded tokens (values at t >= L are ignored).
          lengths: [B] int valid lengths L (clipped to [0, T]).

        Returns:
          [B, T, H] in ``dtype``: ``(h_fwd + h_bwd) / 2`` at t < L, exactly 0 at t >= L.
        """
        batch, num_steps, embed_dim = inputs.shape
        hidden = self.hidden_size
        init = _uniform_init(hidden)
        input_kernel = self.param("input_kernel", init, (2, embed_dim, 4 * hidden))
        recurrent_kernel = self.param("recurrent_kernel", init, (2, hidden, 4 * hidden))

        lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 0, num_steps)
        rev = reversal_index(lengths, num_steps)  # [B, T]
        inputs = jnp.asarray(inputs, self.dtype)
        reversed_inputs = jnp.take_along_axis(inputs, rev[:, :, None], axis=1)
        both = jnp.stack([inputs, reversed_inputs])  # [2, B, T, E]
        # One matmul for the input projections of every step and both directions, time-major.
        projected = jnp.einsum(
            "nbte,neg->tnbg", both, jnp.asarray(input_kernel, self.dtype)
        )  # [T, 2, B, 4H]
        w_hh = jnp.asarray(recurrent_kernel, self.dtype)

        def step(carry, gates_in):
            h, c = carry  # [2, B, H] float32
            gates = gates_in.astype(jnp.float32) + jnp.einsum(
                "nbh,nhg->nbg", h.astype(self.dtype), w_hh, preferred_element_type=jnp.float32
            )
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h.astype(self.dtype)

        if self.remat:
            # Inside scan CSE cannot merge the recomputation away, so no barrier is needed.
            step = jax.checkpoint(
                step, prevent_cse=False, policy=jax.checkpoint_policies.dots_saveable
            )
        zeros = jnp.zeros((2, batch, hidden), jnp.float32)
        _, outputs = jax.lax.scan(step, (zeros, zeros), projected)  # [T, 2, B, H]
        forward = jnp.transpose(outputs[:, 0], (1, 0, 2))  # [B, T, H]
        backward = jnp.take_along_axis(
            jnp.transpose(outputs[:, 1], (1, 0, 2)), rev[:, :, None], axis=1
        )
        valid = jnp.arange(num_steps)[None, :, None] < lengths[:, None, None]
        averaged = (forward.astype(jnp.float32) + backward.astype(jnp.float32)) * 0.5
        return jnp.where(valid, averaged, 0.0).astype(self.dtype)
