"""Bias-free bidirectional LSTM with exact variable-length handling (ssan §2.4, §7.3).

Reproduces PyTorch ``nn.LSTM(E, H, bidirectional=True, bias=False)`` run on packed sequences,
with the two directions averaged: the forward direction reads tokens ``0 .. L-1``, the backward
direction starts at token ``L-1`` from a zero state, and steps ``t >= L`` output exact zeros.

Both directions run in ONE ``lax.scan`` (batched [2, B, E] x [2, E, 4H] and [2, B, H] x
[2, H, 4H] matmuls per step). The backward direction is fed the sequence gathered with the
per-sample involution ``rev(t) = L-1-t`` (t < L) else ``t``, and its outputs are gathered back
with the same map.

Cost follows the batch's longest sequence, not the padded T: steps at or past it produce only
outputs that are masked to zero, so ``lstm_recurrence`` skips them: the forward pass loops over
the first ``longest`` steps only (a ``fori_loop`` writing into zero-filled buffers) and the
backward pass skips whole chunks past it (``lax.cond``). SSAN pads captions to T = 100 while
CUHK-PEDES captions average about 23 words, so this removes most of the step's largest matmuls.
The backward pass is written out (`jax.custom_vjp`): differentiating a ``cond`` inside a
``scan`` would stack the closed-over kernels as per-step residuals (T copies of [2, H, 4H],
13 GiB at the paper's sizes). It keeps per step only the gate pre-activations and the cell
state (what ``dots_saveable`` remat kept before) and recomputes the gate nonlinearities, so it
needs no remat option.

Parameter names (a file format); direction 0 = forward, 1 = backward::

    PyTorch                                   Flax
    weight_ih_l0 / weight_ih_l0_reverse [4H, E]   input_kernel     [2, E, 4H]  (transposed)
    weight_hh_l0 / weight_hh_l0_reverse [4H, H]   recurrent_kernel [2, H, 4H]  (transposed)

Gate order along 4H is PyTorch's (i, f, g, o).
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


def _gates(pre_activations: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """[..., 4H] float32 pre-activations -> the (i, f, g, o) gate values."""
    i, f, g, o = jnp.split(pre_activations, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _recurrence_forward(inputs, input_kernel, recurrent_kernel, longest):
    """Runs the recurrence; returns (outputs [T, 2, B, H], residuals for the VJP)."""
    num_steps, _, batch, _ = inputs.shape
    hidden = recurrent_kernel.shape[1]
    dtype = inputs.dtype

    def cell(carry, x_t):
        h, c = carry  # [2, B, H] float32
        z = jnp.einsum(
            "nbe,neg->nbg", x_t, input_kernel, preferred_element_type=jnp.float32
        ) + jnp.einsum(
            "nbh,nhg->nbg", h.astype(dtype), recurrent_kernel, preferred_element_type=jnp.float32
        )
        i, f, g, o = _gates(z)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), (h.astype(dtype), z, c)

    # Only steps t < longest run; the buffers keep exact zeros at the steps past it.
    def body(t, carry):
        state, (outputs, pre_activations, cells) = carry
        state, (h, z, c) = cell(state, inputs[t])
        buffers = (
            outputs.at[t].set(h),
            pre_activations.at[t].set(z),
            cells.at[t].set(c),
        )
        return state, buffers

    zeros = jnp.zeros((2, batch, hidden), jnp.float32)
    buffers = (
        jnp.zeros((num_steps, 2, batch, hidden), dtype),
        jnp.zeros((num_steps, 2, batch, 4 * hidden), jnp.float32),
        jnp.zeros((num_steps, 2, batch, hidden), jnp.float32),
    )
    _, (outputs, pre_activations, cells) = jax.lax.fori_loop(
        0, jnp.minimum(longest, num_steps), body, ((zeros, zeros), buffers)
    )
    residuals = (inputs, input_kernel, recurrent_kernel, longest, outputs, pre_activations, cells)
    return outputs, residuals


@jax.custom_vjp
def lstm_recurrence(
    inputs: jnp.ndarray,
    input_kernel: jnp.ndarray,
    recurrent_kernel: jnp.ndarray,
    longest: jnp.ndarray,
) -> jnp.ndarray:
    """Bias-free LSTM recurrence of two directions from zero states, skipping steps >= longest.

    Args:
      inputs: [T, 2, B, E] time-major inputs of both directions (compute dtype).
      input_kernel: [2, E, 4H] (compute dtype).
      recurrent_kernel: [2, H, 4H] (compute dtype).
      longest: int32 scalar; steps t >= longest output zeros and leave the state as it is.

    Returns:
      [T, 2, B, H] hidden states in the compute dtype (gates and cell state are float32).
    """
    return _recurrence_forward(inputs, input_kernel, recurrent_kernel, longest)[0]


# Steps per chunk of the backward pass: the weight gradients are accumulated once per chunk
# with a matmul over its C x B rows, instead of rewriting the [2, H, 4H] accumulators at every
# step (at H = 2048 that was ~0.3 GB of memory traffic per step); whole chunks past the longest
# sequence are skipped. C is the largest divisor of T in this range (T = 100: C = 10), so that
# the [T, ...] residuals reshape into chunks without a padded copy; T without one pads to a
# multiple of the range's end.
BACKWARD_CHUNKS = range(4, 13)


def backward_chunk(num_steps: int) -> int:
    """C, the steps per backward chunk for T = `num_steps` (see BACKWARD_CHUNKS)."""
    divisors = [c for c in BACKWARD_CHUNKS if num_steps % c == 0]
    return max(divisors) if divisors else BACKWARD_CHUNKS[-1]


def _recurrence_backward(residuals, output_cotangents):
    inputs, input_kernel, recurrent_kernel, longest, outputs, pre_activations, cells = residuals
    num_steps, _, batch, embed_dim = inputs.shape
    hidden = recurrent_kernel.shape[1]
    dtype = inputs.dtype
    zero_state = jnp.zeros((1, 2, batch, hidden), jnp.float32)
    previous_cells = jnp.concatenate([zero_state, cells[:-1]])
    previous_outputs = jnp.concatenate([zero_state.astype(dtype), outputs[:-1]])

    def cell(carry, scanned):
        dh, dc = carry
        _, g_out, z, c, c_prev = scanned
        i, f, g, o = _gates(z)
        dh = dh + g_out.astype(jnp.float32)
        tanh_c = jnp.tanh(c)
        do = dh * tanh_c
        dc = dc + dh * o * (1 - tanh_c**2)
        dz = jnp.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g**2),
                do * o * (1 - o),
            ],
            axis=-1,
        ).astype(dtype)
        dh_prev = jnp.einsum(
            "nbg,nhg->nbh", dz, recurrent_kernel, preferred_element_type=jnp.float32
        )
        return (dh_prev, dc * f), dz

    def padding(carry, scanned):
        del scanned
        return carry, jnp.zeros((2, batch, 4 * hidden), dtype)

    def step(carry, scanned):
        return jax.lax.cond(scanned[0] < longest, cell, padding, carry, scanned)

    def chunk(carry, scanned):
        (dh, dc, d_input_kernel, d_recurrent_kernel), per_step = carry, scanned
        (dh, dc), dz = jax.lax.scan(step, (dh, dc), per_step[:5], reverse=True)  # [C, 2, B, 4H]
        h_prev, x = per_step[5], per_step[6]
        d_input_kernel = d_input_kernel + jnp.einsum(
            "cnbe,cnbg->neg", x, dz, preferred_element_type=jnp.float32
        )
        d_recurrent_kernel = d_recurrent_kernel + jnp.einsum(
            "cnbh,cnbg->nhg", h_prev, dz, preferred_element_type=jnp.float32
        )
        dx = jnp.einsum("cnbg,neg->cnbe", dz, input_kernel, preferred_element_type=jnp.float32)
        return (dh, dc, d_input_kernel, d_recurrent_kernel), dx.astype(dtype)

    def skipped_chunk(carry, scanned):
        return carry, jnp.zeros(scanned[6].shape, dtype)

    def chunk_step(carry, scanned):
        first_step = scanned[0][0]
        return jax.lax.cond(first_step < longest, chunk, skipped_chunk, carry, scanned)

    chunk_size = backward_chunk(num_steps)
    chunks = -(-num_steps // chunk_size)
    padded = chunks * chunk_size

    def by_chunk(x):  # [T, ...] -> [chunks, C, ...], padded at the end (steps >= T are skipped)
        if padded != num_steps:
            x = jnp.pad(x, [(0, padded - num_steps)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((chunks, chunk_size) + x.shape[1:])

    scanned = tuple(
        by_chunk(x)
        for x in (
            jnp.arange(num_steps, dtype=jnp.int32),
            output_cotangents,
            pre_activations,
            cells,
            previous_cells,
            previous_outputs,
            inputs,
        )
    )
    zeros = jnp.zeros((2, batch, hidden), jnp.float32)
    carry = (
        zeros,
        zeros,
        jnp.zeros(input_kernel.shape, jnp.float32),
        jnp.zeros(recurrent_kernel.shape, jnp.float32),
    )
    (_, _, d_input_kernel, d_recurrent_kernel), d_inputs = jax.lax.scan(
        chunk_step, carry, scanned, reverse=True
    )
    return (
        d_inputs.reshape((padded,) + inputs.shape[1:])[:num_steps],
        d_input_kernel.astype(input_kernel.dtype),
        d_recurrent_kernel.astype(recurrent_kernel.dtype),
        None,
    )


lstm_recurrence.defvjp(_recurrence_forward, _recurrence_backward)


class BiLstm(nn.Module):
    """One-layer bias-free bidirectional LSTM whose two directions are averaged.

    Attributes:
      hidden_size: H per direction (2048 in SSAN).
      dtype: compute dtype of the matmuls; gates and cell state are float32.
    """

    hidden_size: int = 2048
    dtype: Any = jnp.float32

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
        both = jnp.transpose(jnp.stack([inputs, reversed_inputs]), (2, 0, 1, 3))  # [T, 2, B, E]
        # A global reduction: every device of a sharded batch skips the same steps.
        longest = jnp.max(lengths, initial=0)
        outputs = lstm_recurrence(
            both,
            jnp.asarray(input_kernel, self.dtype),
            jnp.asarray(recurrent_kernel, self.dtype),
            longest,
        )  # [T, 2, B, H]
        forward = jnp.transpose(outputs[:, 0], (1, 0, 2))  # [B, T, H]
        backward = jnp.take_along_axis(
            jnp.transpose(outputs[:, 1], (1, 0, 2)), rev[:, :, None], axis=1
        )
        valid = jnp.arange(num_steps)[None, :, None] < lengths[:, None, None]
        averaged = (forward.astype(jnp.float32) + backward.astype(jnp.float32)) * 0.5
        return jnp.where(valid, averaged, 0.0).astype(self.dtype)
