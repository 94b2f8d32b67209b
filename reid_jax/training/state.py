"""The train state: a plain pytree of arrays that the jitted step takes and returns."""

from __future__ import annotations

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
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
    """Builds the step-0 state from freshly initialised model variables.

    Args:
      variables: flax variables with 'params' and optionally 'batch_stats'.
      tx: the optimizer; its state is initialised from the params.

    Returns:
      A TrainState with step 0.
    """
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def model_variables(state: TrainState) -> dict[str, Any]:
    """The flax variables dict ({'params', 'batch_stats'}) for `model.apply` in eval mode."""
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


def apply_gradients(
    state: TrainState, grads: Any, batch_stats: Any, tx: optax.GradientTransformation
) -> TrainState:
    """One optimizer update: the state after applying `grads` (shared by every task's step).

    Args:
      state: the current state.
      grads: gradients with the structure of `state.params`.
      batch_stats: the BatchNorm statistics the forward pass produced.
      tx: the optimizer `state.opt_state` belongs to.

    Returns:
      The state with step + 1, updated params and opt_state, and the new batch_stats.
    """
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
