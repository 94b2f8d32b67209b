"""Config helpers shared by every `configs/*.py`: argument parsing, placeholders, smoke
shrinking and validation.

A config file defines `get_config(arg=None)`; `arg` is the text after ':' in
`--config configs/ssan.py:cuhk_pedes,smoke` — comma-separated bare words (a dataset name or
'smoke') and `key=value` pairs. This module never touches JAX devices, so importing a config
does not start a backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
from ml_collections import config_dict

SECTIONS = ("data", "model", "loss", "optim", "train", "eval", "mesh", "checkpoint")
DTYPES = ("float32", "bfloat16")
MATMUL_PRECISIONS = ("default", "high", "highest")


class ConfigError(ValueError):
    """A config value is missing or invalid; the message starts with the field, e.g.
    'config.optim.lr: must be > 0, got -1.0'."""

    def __init__(self, field: str, message: str):
        super().__init__(f"config.{field}: {message}")
        self.field = field


class _RequiredReference(config_dict.FieldReference):
    """A value the user must set (a dataset path); `validate` names it while it is None.

    ml_collections' own required placeholder cannot be locked while unset, and
    `config_flags` locks the config before applying overrides, so we check it ourselves.
    """


def required_placeholder(field_type: type) -> config_dict.FieldReference:
    """A field that must be overridden (e.g. `--config.data.root=/data/CUHK-PEDES`).

    Args:
      field_type: the type the value must have once set.

    Returns:
      A field reference holding None until set.
    """
    return _RequiredReference(None, field_type)


def parse_arg(
    arg: str | None, *, variants: Sequence[str], default: str
) -> ml_collections.ConfigDict:
    """Parses the config argument string.

    Args:
      arg: e.g. 'cuhk_pedes,smoke', 'smoke', 'dataset=icfg_pedes,smoke' or None.
      variants: accepted bare variant names (datasets).
      default: variant used when `arg` names none.

    Returns:
      ConfigDict(variant=str, smoke=bool).

    Raises:
      ValueError: an unknown word, key or a second variant.
    """
    parsed = {"variant": None, "smoke": False}
    for word in filter(None, (w.strip() for w in (arg or "").split(","))):
        key, _, value = word.partition("=")
        if not value:
            key, value = ("smoke", "true") if word == "smoke" else ("variant", word)
        if key in ("dataset", "variant"):
            key = "variant"
            if value not in variants:
                raise ValueError(
                    f"config argument: unknown variant '{value}', choose from "
                    f"{tuple(variants)} or 'smoke'"
                )
            if parsed["variant"] is not None:
                raise ValueError(f"config argument: two variants in '{arg}'")
        elif key == "smoke":
            value = value.lower() in ("1", "true", "yes")
        else:
            raise ValueError(f"config argument: unknown key '{key}' in '{arg}'")
        parsed[key] = value
    parsed["variant"] = parsed["variant"] or default
    return ml_collections.ConfigDict(parsed)


def shrink_for_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns a config into a seconds-long CPU run: 2 steps, everything logged and saved.

    The model section is left alone (the config file shrinks its own model).

    Args:
      config: an unlocked full config.

    Returns:
      The same config, modified in place.
    """
    config.train.num_steps = 2
    config.train.log_every_steps = 1
    config.checkpoint.every_steps = 2
    config.eval.every_epochs = 0
    config.data.num_workers = 0
    return config


def _leaves(cfg: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in cfg.items(preserve_field_references=True):
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{name}.")
        else:
            yield name, value


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)


# Dataset paths a run does not read when `data.tfds_dir` names a prepared dataset.
READ_FROM_PREPARED = ("data.root", "data.train_files", "data.train_image_root")


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks a config once at the start of a run.

    Args:
      config: the full (possibly overridden) config.

    Raises:
      ConfigError: naming the first offending field.
    """
    for section in SECTIONS:
        _check(section in config, section, "missing section")
    # attribute_joint has no tfds_dir field (it reads image folders only).
    prepared = "data" in config and "tfds_dir" in config.data and bool(config.data.tfds_dir)
    for name, value in _leaves(config):
        if prepared and name in READ_FROM_PREPARED:
            continue
        if isinstance(value, _RequiredReference) and value.get() is None:
            raise ConfigError(
                name, f"required value is not set (override it, e.g. --config.{name}=...)"
            )
    train, optim = config.train, config.optim
    _check(train.batch_size > 0, "train.batch_size", f"must be > 0, got {train.batch_size}")
    _check(
        train.num_epochs > 0 or train.num_steps > 0,
        "train.num_epochs",
        "num_epochs or num_steps must be > 0",
    )
    _check(train.log_every_steps > 0, "train.log_every_steps", "must be > 0")
    _check(config.checkpoint.every_steps > 0, "checkpoint.every_steps", "must be > 0")
    _check(config.checkpoint.max_to_keep > 0, "checkpoint.max_to_keep", "must be > 0")
    _check(config.eval.every_epochs >= 0, "eval.every_epochs", "must be >= 0")
    _check(optim.lr > 0, "optim.lr", f"must be > 0, got {optim.lr}")
    from reid_jax.training.optim import OPTIMIZERS, SCHEDULES  # lazy: imports jax

    _check(
        optim.name in OPTIMIZERS,
        "optim.name",
        f"unknown optimizer '{optim.name}', choose from {sorted(OPTIMIZERS)}",
    )
    _check(
        optim.schedule in SCHEDULES,
        "optim.schedule",
        f"unknown schedule '{optim.schedule}', choose from {sorted(SCHEDULES)}",
    )
    _check(optim.clip_norm >= 0, "optim.clip_norm", f"must be >= 0, got {optim.clip_norm}")
    _check(
        train.grad_accum_steps >= 1 and train.batch_size % train.grad_accum_steps == 0,
        "train.grad_accum_steps",
        f"must be >= 1 and divide train.batch_size {train.batch_size}, "
        f"got {train.grad_accum_steps}",
    )
    _check(
        0.0 <= train.ema_decay < 1.0, "train.ema_decay", f"must be in [0, 1), got {train.ema_decay}"
    )
    _check(
        not config.eval.use_ema or train.ema_decay > 0,
        "eval.use_ema",
        "needs train.ema_decay > 0 (no moving average is kept)",
    )
    _check(optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    epochs = tuple(optim.decay_epochs)
    _check(
        list(epochs) == sorted(epochs) and all(e > 0 for e in epochs),
        "optim.decay_epochs",
        f"must be increasing positive epochs, got {epochs}",
    )
    names = [group[0] for group in optim.groups]
    _check(
        all(len(group) == 2 for group in optim.groups),
        "optim.groups",
        "must be (name, regex) pairs",
    )
    _check(len(set(names)) == len(names), "optim.groups", f"duplicate group names {names}")
    for name in names:
        _check(
            name in optim.lr_multipliers,
            f"optim.lr_multipliers.{name}",
            f"missing for group '{name}'",
        )
    for name in optim.no_decay_groups:
        _check(name in names, "optim.no_decay_groups", f"'{name}' is not a group in {names}")
    for name in optim.get("group_options") or {}:
        _check(name in names, f"optim.group_options.{name}", f"'{name}' is not a group in {names}")
    _check(
        config.model.dtype in DTYPES,
        "model.dtype",
        f"must be one of {DTYPES}, got '{config.model.dtype}'",
    )
    _check(
        config.model.matmul_precision in MATMUL_PRECISIONS,
        "model.matmul_precision",
        f"must be one of {MATMUL_PRECISIONS}, got '{config.model.matmul_precision}'",
    )
    _check(
        len(config.mesh.axis_names) == len(config.mesh.axis_sizes),
        "mesh.axis_sizes",
        "needs one size per name in mesh.axis_names",
    )
    _check("data" in config.mesh.axis_names, "mesh.axis_names", "must include 'data'")
    for index, rule in enumerate(config.init_from_rules):
        _check(
            len(rule) == 2 and all(isinstance(part, str) for part in rule),
            "init_from_rules",
            f"rule {index} must be a (regex, replacement) pair of strings, got {rule!r}",
        )
        try:
            re.compile(rule[0])
        except re.error as error:
            raise ConfigError(
                "init_from_rules", f"rule {index}: bad regex {rule[0]!r}: {error}"
            ) from None
    if config.eval.select_metric:
        _check(
            "/" in config.eval.select_metric,
            "eval.select_metric",
            f"must be a path such as 'sum/R1', got '{config.eval.select_metric}'",
        )
    _check("distributed" in config.mesh, "mesh.distributed", "missing (bool: multi-host run)")
    from reid_jax.data.bad_images import POLICIES as BAD_IMAGE_POLICIES

    _check(
        config.data.bad_images in BAD_IMAGE_POLICIES,
        "data.bad_images",
        f"must be one of {BAD_IMAGE_POLICIES}, got {config.data.bad_images!r}",
    )


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs a config file's `get_config(arg)`: `spec` is 'PATH' or 'PATH:ARG'.

    A config file is Python the user chose to run, like a script; data and weights files are
    never executed.

    Raises:
      FileNotFoundError: the file does not exist.
      ConfigError: the file defines no get_config, or its argument is invalid.
    """
    import importlib.util
    import os

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: {path}: no such config file")
    module_spec = importlib.util.spec_from_file_location("reid_jax_user_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError("", f"{path} defines no get_config(arg)")
    try:
        return module.get_config(arg or None)
    except ValueError as error:
        raise ConfigError("", f"{path}: {error}") from None


def _field_names(cfg: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    """Every section and leaf name, dotted ('optim', 'optim.lr', ...)."""
    for key, value in cfg.items(preserve_field_references=True):
        yield f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from _field_names(value, f"{prefix}{key}.")


def _unknown_field(config: ml_collections.ConfigDict, name: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(name, list(_field_names(config)), n=1, cutoff=0.6)
    hint = f" (did you mean config.{close[0]}?)" if close else ""
    return ConfigError(name, f"no such field{hint}")


def _parse_value(text: str, field_type: type | None) -> Any:
    """An override's Python value: kept as written for str fields, else booleans and Python
    literals (numbers, tuples) parsed, falling back to the text."""
    import ast

    if field_type is str:
        return text
    if field_type is bool and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
) -> None:
    """Sets `--config.a.b=value` overrides on a config, in order.

    Args:
      config: the config (fields may not be added: an unknown name is an error).
      overrides: (dotted field name without the 'config.' prefix, value text) pairs.

    Raises:
      ConfigError: an unknown field (naming the closest known one) or a value of the wrong
        type.
    """
    for name, text in overrides:
        *parents, leaf = name.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise _unknown_field(config, name)
            node = node[part]
        if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
            raise _unknown_field(config, name)
        value = _parse_value(text, node.get_ref(leaf).get_type())
        try:
            node[leaf] = value
        except (TypeError, ValueError) as error:
            raise ConfigError(name, f"cannot set {text!r}: {error}") from None
