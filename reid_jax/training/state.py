"""The train state: a plain pytree of arrays that the jitted step takes and returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and updates.

    Attributes:
      step: [] int32 number of optimizer updates done so far.
      params: model parameters (float32).
      batch_stats: BatchNorm running statistics ({} for models without BatchNorm).
      opt_state: optax state of the optimizer built by `training.optim.make_optimizer`.
      ema_params: exponential moving average of `params` ({} when `train.ema_decay` is 0).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any


def create_train_state(
    variables: dict[str, Any], tx: optax.GradientTransformation, *, ema: bool = False
) -> TrainState:
    """Builds the step-0 state from model variables (fresh or loaded; the optimizer state is
    always fresh).

    Args:
      variables: flax variables with 'params' and optionally 'batch_stats'.
      tx: the optimizer; its state is initialised from the params.
      ema: keep an exponential moving average of the params (starts equal to them).

    Returns:
      A TrainState with step 0.
    """
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if ema else {},
    )


def model_variables(state: TrainState, *, use_ema: bool = False) -> dict[str, Any]:
    """The flax variables dict ({'params', 'batch_stats'}) for `model.apply` in eval mode.

    Args:
      state: the train state.
      use_ema: take the moving average of the params instead of the params.
    """
    fields = {"params": state.params, "batch_stats": state.batch_stats}
    return eval_variables({**fields, "ema_params": state.ema_params}, use_ema=use_ema)


def eval_variables(fields: Mapping[str, Any], *, use_ema: bool = False) -> dict[str, Any]:
    """The flax variables for evaluation from saved fields ('params', 'batch_stats',
    'ema_params', as `checkpoint.restore_variables` returns them).

    Raises:
      ValueError: `use_ema` without a moving average.
    """
    if use_ema and not fields.get("ema_params"):
        raise ValueError("eval.use_ema: the run keeps no moving average (train.ema_decay=0)")
    variables = {"params": fields["ema_params"] if use_ema else fields["params"]}
    if fields.get("batch_stats"):
        variables["batch_stats"] = fields["batch_stats"]
    return variables


def apply_gradients(
    state: TrainState,
    grads: Any,
    batch_stats: Any,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float = 0.0,
) -> TrainState:
    """One optimizer update: the state after applying `grads` (shared by every task's step).

    Args:
      state: the current state.
      grads: gradients with the structure of `state.params`.
      batch_stats: the BatchNorm statistics the forward pass produced.
      tx: the optimizer `state.opt_state` belongs to.
      ema_decay: d of the moving average ema <- d * ema + (1 - d) * params (used only when
        the state keeps one).

    Returns:
      The state with step + 1, updated params, opt_state and moving average, and the new
      batch_stats.
    """
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params:
        ema_params = jax.tree.map(
            lambda avg, new: ema_decay * avg + (1.0 - ema_decay) * new, ema_params, params
        )
    return state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_params,
    )
