"""Optimizers from `config.optim`: regex parameter groups, per-group lr, one shared schedule.

`config.optim` fields:
  name: 'adam' (weight decay, if any, is coupled L2 added to the gradient, as AlignedReID)
    or 'adamw' (decoupled decay scaled by the lr, as APTM).
  lr: base learning rate; group g trains at `lr * lr_multipliers[g] * schedule(step)`.
  b1, b2, eps: Adam moments (ssan §4: 0.9, 0.999, 1e-8).
  weight_decay: decay strength (0 = none); `no_decay_groups` lists groups exempt from it.
  groups: tuple of (name, regex) pairs; a parameter belongs to the FIRST group whose regex
    matches (`re.search`) its '/'-joined path, e.g. 'backbone/stage1/conv/kernel'.
  lr_multipliers: group name -> lr factor (ssan: backbone 0.1, rest 1.0).
  schedule: 'constant', 'step' (x decay_factor after each of decay_epochs), 'cosine'
    (to 0 at the last step), 'exp' (constant until epoch decay_epochs[0], then geometric
    per-epoch decay reaching decay_factor in the last epoch, alignedreid §6.2), or APTM's
    'warmup_linear' and 'warmup_step_linear' (aptm §5.2, their own warm-up of warmup_steps,
    or floor(warmup_fraction * T) steps); warmup_steps of linear warm-up multiply the others.
  clip_norm: > 0 clips the gradient to this global norm before the update (0 = off).
  group_options (optional): group name -> overrides for that group only:
    b1, b2, eps: its own Adam moments (e.g. a discriminator's b1 = 0.5);
    start_epoch: the group is frozen before this epoch: no update and no optimizer-state
      change (its Adam step count and moments start when it starts), as for players that
      join in a later training stage;
    epoch_factors: ((epoch, factor), ...) ascending: from each epoch on, the group's lr is
      also multiplied by that factor (e.g. ((30, 0.1),): a tenth of the lr from epoch 30).
Optimizers and schedules are registered in `OPTIMIZERS` and `SCHEDULES`, the only place that
names them (`config_lib.validate` checks names against them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array | int], jax.Array]


def param_path(path: Sequence[Any]) -> str:
    """Joins a pytree key path into 'a/b/c' (dict keys, attribute names or indices)."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def param_group_labels(params: Any, groups: Sequence[Sequence[str]]) -> Any:
    """Labels every parameter with the name of the first group whose regex matches its path.

    Args:
      params: parameter pytree (nested dicts of arrays).
      groups: (name, regex) pairs in priority order.

    Returns:
      A pytree with the structure of `params` holding group names.

    Raises:
      ValueError: a parameter matches no group (the error names its path).
    """
    compiled = [(name, re.compile(regex)) for name, regex in groups]

    def label(path, _):
        joined = param_path(path)
        for name, pattern in compiled:
            if pattern.search(joined):
                return name
        raise ValueError(
            f"config.optim.groups: parameter '{joined}' matches no group regex "
            f"{[regex for _, regex in groups]}"
        )

    return jax.tree_util.tree_map_with_path(label, params)


def _exp_schedule(optim_config: Any, *, steps_per_epoch: int, total_steps: int) -> Schedule:
    """alignedreid §6.2 'exp': 1 for 0-based epochs e < s, then f ** ((e + 1 - s) / (T - s)).

    s = decay_epochs[0], f = decay_factor, T = total epochs; set once per epoch, reaching f in
    the last epoch (the re-production: s = 150, T = 300, f = 1e-3, i.e. its 1-based epoch 151).
    """
    if not optim_config.decay_epochs:
        raise ValueError("config.optim.decay_epochs: the 'exp' schedule needs its start epoch")
    start = int(optim_config.decay_epochs[0])
    num_epochs = max(-(-total_steps // steps_per_epoch), start + 1)
    factor = float(optim_config.decay_factor)

    def schedule(step):
        epoch = jnp.asarray(step) // steps_per_epoch
        exponent = (epoch + 1 - start).astype(jnp.float32) / (num_epochs - start)
        return jnp.where(epoch < start, 1.0, factor**exponent).astype(jnp.float32)

    return schedule


def _constant_schedule(optim_config: Any, *, steps_per_epoch: int, total_steps: int) -> Schedule:
    del optim_config, steps_per_epoch, total_steps
    return optax.constant_schedule(1.0)


def _step_schedule(optim_config: Any, *, steps_per_epoch: int, total_steps: int) -> Schedule:
    """x decay_factor from the first step of each epoch in decay_epochs (ssan §4: 20, 40)."""
    del total_steps
    boundaries = {
        int(e) * steps_per_epoch: float(optim_config.decay_factor)
        for e in optim_config.decay_epochs
    }
    return optax.piecewise_constant_schedule(1.0, boundaries)


def _cosine_schedule(optim_config: Any, *, steps_per_epoch: int, total_steps: int) -> Schedule:
    """Cosine to 0 at the last step, starting after the warm-up."""
    del steps_per_epoch
    warmup = int(optim_config.warmup_steps)
    base = optax.cosine_decay_schedule(1.0, max(total_steps - warmup, 1))
    if warmup:
        base = optax.join_schedules([optax.constant_schedule(1.0), base], [warmup])
    return base


def _aptm_warmup_steps(optim_config: Any, total_steps: int) -> int:
    """Wu = warmup_steps, or floor(warmup_fraction * T) when warmup_steps is 0 (aptm §5.2)."""
    if int(optim_config.warmup_steps):
        return int(optim_config.warmup_steps)
    return max(1, int(float(optim_config.get("warmup_fraction", 0.0)) * total_steps))


def _linear_decay(step, warmup: int, total_steps: int):
    s = jnp.asarray(step, jnp.float32)
    decay = jnp.maximum(0.0, (total_steps - s) / max(total_steps - warmup, 1))
    return jnp.where(s < warmup, s / warmup, decay).astype(jnp.float32)


def _warmup_linear_schedule(
    optim_config: Any, *, steps_per_epoch: int, total_steps: int
) -> Schedule:
    """APTM 'linear' (aptm §5.2): s / Wu during warm-up (0 at the first step), then linear
    decay to 0 at T. Wu = optim.warmup_steps (pre-training: 2600)."""
    del steps_per_epoch
    warmup = _aptm_warmup_steps(optim_config, total_steps)
    return lambda step: _linear_decay(step, warmup, total_steps)


def _warmup_step_linear_schedule(
    optim_config: Any, *, steps_per_epoch: int, total_steps: int
) -> Schedule:
    """APTM 'step' (aptm §5.2): the 'linear' warm-up and decay times 1 before 4 Wu, 0.5 before
    7 Wu, 0.2 after; Wu = optim.warmup_steps or floor(optim.warmup_fraction * T) (0.1 T)."""
    del steps_per_epoch
    warmup = _aptm_warmup_steps(optim_config, total_steps)

    def schedule(step):
        s = jnp.asarray(step, jnp.float32)
        factor = jnp.where(s < 4 * warmup, 1.0, jnp.where(s < 7 * warmup, 0.5, 0.2))
        return jnp.where(s < warmup, 1.0, factor) * _linear_decay(step, warmup, total_steps)

    return schedule


# The one place that names schedules: adding one is a function and an entry here.
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _constant_schedule,
    "step": _step_schedule,
    "cosine": _cosine_schedule,
    "exp": _exp_schedule,
    "warmup_linear": _warmup_linear_schedule,
    "warmup_step_linear": _warmup_step_linear_schedule,
}
# Schedules that include their own warm-up (optim.warmup_steps is theirs, not the generic ramp).
OWN_WARMUP = frozenset({"warmup_linear", "warmup_step_linear"})


def make_schedule(optim_config: Any, *, steps_per_epoch: int, total_steps: int) -> Schedule:
    """The lr multiplier shared by all groups, as a function of the optimizer step.

    Args:
      optim_config: `config.optim` (schedule, decay_epochs, decay_factor, warmup_steps).
      steps_per_epoch: optimizer steps per epoch (epoch-based decay points).
      total_steps: steps of the whole run (end of the cosine decay).

    Returns:
      schedule(step) -> [] float32 multiplier (1.0 at the base lr).
    """
    if optim_config.schedule not in SCHEDULES:
        raise ValueError(
            f"config.optim.schedule: unknown schedule '{optim_config.schedule}', choose from "
            f"{sorted(SCHEDULES)}"
        )
    base = SCHEDULES[optim_config.schedule](
        optim_config, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    warmup_steps = int(optim_config.warmup_steps)
    if not warmup_steps or optim_config.schedule in OWN_WARMUP:
        return base

    def warmed(step):
        ramp = jnp.minimum((jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps, 1.0)
        return ramp * base(step)

    return warmed


def _adam(moments: dict, lr: Schedule, weight_decay: float) -> optax.GradientTransformation:
    """Adam; weight decay is coupled L2 added to the gradient (AlignedReID, alignedreid §6.1)."""
    if weight_decay:
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_adam(**moments),
            optax.scale_by_learning_rate(lr),
        )
    return optax.adam(lr, **moments)


def _adamw(moments: dict, lr: Schedule, weight_decay: float) -> optax.GradientTransformation:
    """AdamW: decoupled decay scaled by the lr (APTM, aptm §5.1)."""
    return optax.adamw(lr, weight_decay=weight_decay, **moments)


# The one place that names optimizers: ({b1, b2, eps}, lr schedule, weight decay) -> transform.
OPTIMIZERS: dict[str, Callable[[dict, Schedule, float], optax.GradientTransformation]] = {
    "adam": _adam,
    "adamw": _adamw,
}


GROUP_OPTIONS = frozenset({"b1", "b2", "eps", "start_epoch", "epoch_factors"})


def _group_options(optim_config: Any, name: str) -> dict[str, Any]:
    """The `optim.group_options` entry of a group ({} when none), keys checked."""
    options = optim_config.get("group_options") or {}
    entry = dict(options.get(name) or {})
    unknown = set(entry) - GROUP_OPTIONS
    if unknown:
        raise ValueError(
            f"config.optim.group_options.{name}: unknown option(s) {sorted(unknown)}, "
            f"choose from {sorted(GROUP_OPTIONS)}"
        )
    return entry


def _epoch_factor_schedule(factors: Sequence[Sequence[float]], steps_per_epoch: int) -> Schedule:
    """1 before the first listed epoch, then the factor of the last listed epoch reached."""
    boundaries = [int(epoch) * steps_per_epoch for epoch, _ in factors]
    values = [float(factor) for _, factor in factors]
    if boundaries != sorted(boundaries):
        raise ValueError(f"config.optim.group_options epoch_factors must ascend, got {factors}")

    def schedule(step):
        step = jnp.asarray(step)
        out = jnp.ones((), jnp.float32)
        for boundary, value in zip(boundaries, values, strict=True):
            out = jnp.where(step >= boundary, value, out)
        return out

    return schedule


class _FrozenUntilState(NamedTuple):
    count: jax.Array
    inner: Any


def frozen_until(inner: optax.GradientTransformation, start_step: int):
    """`inner` from optimizer step `start_step` on; before it zero updates and an unchanged
    inner state (so the inner step count and moments begin when the group starts)."""

    def init(params):
        return _FrozenUntilState(jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new_updates, new_inner = inner.update(updates, state.inner, params)
        active = state.count >= start_step
        new_updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), new_updates)
        new_inner = jax.tree.map(
            lambda new, old: jnp.where(active, new, old), new_inner, state.inner
        )
        return new_updates, _FrozenUntilState(state.count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    optim_config: Any, params: Any, *, steps_per_epoch: int, total_steps: int
) -> optax.GradientTransformation:
    """Builds `optax.multi_transform` over the configured parameter groups.

    Args:
      optim_config: `config.optim` (see the module docstring).
      params: the parameter pytree (or its shapes) used to assign groups.
      steps_per_epoch: steps per epoch for epoch-based decay points.
      total_steps: steps of the whole run.

    Returns:
      The optimizer; `tx.update(grads, opt_state, params)` as usual.
    """
    schedule = make_schedule(optim_config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    transforms = {}
    for name, _ in optim_config.groups:
        options = _group_options(optim_config, name)
        group_lr = float(optim_config.lr) * float(optim_config.lr_multipliers[name])
        factor = _epoch_factor_schedule(options.get("epoch_factors", ()), steps_per_epoch)
        lr_schedule = lambda step, group_lr=group_lr, factor=factor: (
            group_lr * schedule(step) * factor(step)
        )
        decay = name not in tuple(optim_config.no_decay_groups)
        weight_decay = float(optim_config.weight_decay) if decay else 0.0
        moments = {key: float(options.get(key, optim_config[key])) for key in ("b1", "b2", "eps")}
        transform = OPTIMIZERS[optim_config.name](moments, lr_schedule, weight_decay)
        if int(options.get("start_epoch", 0)) > 0:
            transform = frozen_until(transform, int(options["start_epoch"]) * steps_per_epoch)
        transforms[name] = transform
    labels = param_group_labels(params, optim_config.groups)
    optimizer = optax.multi_transform(transforms, labels)
    if optim_config.clip_norm > 0:
        # Clip the whole gradient by its global norm before any group sees it.
        optimizer = optax.chain(optax.clip_by_global_norm(float(optim_config.clip_norm)), optimizer)
    return optimizer


def group_learning_rates(
    optim_config: Any, multiplier: float, *, step: int = 0, steps_per_epoch: int = 1
) -> dict[str, float]:
    """Host-side lr of every group for a schedule value (for logging only).

    Args:
      optim_config: `config.optim`.
      multiplier: value of the `make_schedule` function at the step.
      step, steps_per_epoch: where the run is, for the groups' own `group_options`
        (a frozen group logs lr 0).

    Returns:
      group name -> learning rate.
    """
    out = {}
    for name, _ in optim_config.groups:
        options = _group_options(optim_config, name)
        factor = _epoch_factor_schedule(options.get("epoch_factors", ()), steps_per_epoch)
        started = step >= int(options.get("start_epoch", 0)) * steps_per_epoch
        lr = float(optim_config.lr) * float(optim_config.lr_multipliers[name]) * multiplier
        out[name] = lr * float(factor(step)) if started else 0.0
    return out
