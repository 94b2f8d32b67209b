"""The train-step skeleton every task shares: gradients (optionally accumulated over
micro-batches), the global gradient norm, the optimizer update and the moving average.

A task provides only its objective:

    loss_fn(model, params, batch_stats, batch, key, *, step, config, info)
        -> (loss [] float32, (metrics {name: [] float32}, new batch_stats))

With `train.grad_accum_steps = A > 1` the global batch [B, ...] is cut into A contiguous
micro-batches of B / A rows (contiguous, so P x K identity groups stay whole when A divides
P), each re-split over the 'data' axis; their gradients are averaged. For a loss that is a mean
of per-example terms this is exactly the gradient of the whole batch (tested). Batch-coupled
losses (ranking, triplet mining) and BatchNorm statistics see micro-batches instead, as in
any accumulation scheme; BatchNorm statistics are threaded through the micro-batches in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from reid_jax.training.state import TrainState, apply_gradients

Constraint = Callable[[Any], Any]


def _split_micro_batches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """[B, ...] -> [count, B / count, ...]: micro-batch i is rows [i B/count, (i+1) B/count)."""
    return jax.tree.map(lambda x: x.reshape(count, x.shape[0] // count, *x.shape[1:]), batch)


def compute_gradients(
    loss_fn: Callable,
    params: Any,
    batch_stats: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    accum_steps: int = 1,
    constrain: Constraint | None = None,
) -> tuple[Any, dict[str, jax.Array], Any]:
    """Gradient of `loss_fn` on a batch, averaged over `accum_steps` micro-batches.

    Args:
      loss_fn: (params, batch_stats, batch, key) -> (loss, (metrics, new batch_stats)).
      params: parameters to differentiate.
      batch_stats: BatchNorm statistics going in.
      batch: name -> [B, ...] global arrays.
      key: PRNG key; micro-batch i gets `fold_in(key, i)` (the key itself when A = 1).
      accum_steps: A >= 1, dividing B.
      constrain: applied to each micro-batch (the loop passes the 'data' sharding constraint,
        so every micro-batch is spread over all devices).

    Returns:
      (grads like params, metrics averaged over micro-batches, batch_stats after the last).
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        grads, (metrics, batch_stats) = grad_fn(params, batch_stats, batch, key)
        return grads, metrics, batch_stats
    constrain = constrain or (lambda tree: tree)

    def accumulate(carry, inputs):
        grad_sum, stats = carry
        micro_batch, index = inputs
        grads, (metrics, stats) = grad_fn(
            params, stats, constrain(micro_batch), jax.random.fold_in(key, index)
        )
        return (jax.tree.map(jnp.add, grad_sum, grads), stats), metrics

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grad_sum, batch_stats), metrics = jax.lax.scan(
        accumulate,
        (zeros, batch_stats),
        (_split_micro_batches(batch, accum_steps), jnp.arange(accum_steps)),
    )
    grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
    return grads, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), batch_stats


def gradient_step(
    task: Any,
    model: Any,
    state: TrainState,
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    tx: optax.GradientTransformation,
    config: Any,
    info: Any,
    constrain: Constraint | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update of a task that provides `loss_fn` (pure; the loop jits it).

    Args:
      task: the task module.
      model: its flax module.
      state: current TrainState.
      batch: global batch.
      key: step key.
      tx: the optimizer.
      config: the config (`train.grad_accum_steps`, `train.ema_decay`, the task's sections).
      info: data facts.
      constrain: sharding constraint for micro-batches (see `compute_gradients`).

    Returns:
      (new state, metrics): the task's metrics plus 'grad_norm', the global norm of the
      (averaged, unclipped) gradient, which also makes a non-finite gradient visible in the
      metrics the loop checks.
    """

    def loss_fn(params, batch_stats, batch, key):
        return task.loss_fn(
            model, params, batch_stats, batch, key, step=state.step, config=config, info=info
        )

    grads, metrics, batch_stats = compute_gradients(
        loss_fn,
        state.params,
        state.batch_stats,
        batch,
        key,
        accum_steps=int(config.train.grad_accum_steps),
        constrain=constrain,
    )
    metrics = dict(metrics, grad_norm=optax.global_norm(grads))
    new_state = apply_gradients(
        state, grads, batch_stats, tx, ema_decay=float(config.train.ema_decay)
    )
    return new_state, metrics
