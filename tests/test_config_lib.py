"""Tests of reid_jax.config_lib and of configs/ssan.py's variants."""

import importlib.util
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from reid_jax import config_lib

SSAN_CONFIG = "configs/ssan.py"


def _ssan_module():
    spec = importlib.util.spec_from_file_location("ssan_config", SSAN_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "arg, variant, smoke",
    [
        (None, "embedded", False),
        ("", "embedded", False),
        ("smoke", "embedded", True),
        ("cuhk_pedes", "cuhk_pedes", False),
        ("cuhk_pedes,smoke", "cuhk_pedes", True),
        ("dataset=icfg_pedes,smoke", "icfg_pedes", True),
        (" smoke , icfg_pedes ", "icfg_pedes", True),
        ("smoke=false", "embedded", False),
    ],
)
def test_parse_arg(arg, variant, smoke):
    parsed = config_lib.parse_arg(
        arg, variants=("embedded", "cuhk_pedes", "icfg_pedes"), default="embedded"
    )
    assert (parsed.variant, parsed.smoke) == (variant, smoke)


@pytest.mark.parametrize(
    "arg, match",
    [
        ("market", "unknown variant 'market'"),
        ("cuhk_pedes,icfg_pedes", "two variants"),
        ("lr=3", "unknown key 'lr'"),
    ],
)
def test_parse_arg_rejects(arg, match):
    with pytest.raises(ValueError, match=match):
        config_lib.parse_arg(
            arg, variants=("embedded", "cuhk_pedes", "icfg_pedes"), default="embedded"
        )


def test_ssan_variants_validate():
    module = _ssan_module()
    for arg in (None, "smoke", "cuhk_pedes", "icfg_pedes,smoke"):
        config = module.get_config(arg)
        config.lock()
        if arg in ("cuhk_pedes", "icfg_pedes,smoke"):
            # The dataset folder is required for real data and named when missing.
            with pytest.raises(config_lib.ConfigError, match=r"^config\.data\.root: required"):
                config_lib.validate(config)
            config.data.root = "/data/somewhere"
        config_lib.validate(config)
    paper = module.get_config("cuhk_pedes")
    assert (paper.model.backbone_depth, tuple(paper.data.image_size)) == (50, (384, 128))
    assert (paper.train.batch_size, paper.train.num_epochs) == (64, 60)
    assert tuple(paper.optim.decay_epochs) == (20, 40) and paper.optim.lr == 1e-3
    assert paper.optim.lr * paper.optim.lr_multipliers.backbone == pytest.approx(1e-4)
    assert module.get_config("icfg_pedes").model.vocab_size == 2500
    smoke = module.get_config("cuhk_pedes,smoke")
    assert smoke.train.num_steps == 2 and smoke.model.vocab_size == 5000


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("optim.lr", -1.0, "config.optim.lr"),
        ("train.batch_size", 0, "config.train.batch_size"),
        ("optim.schedule", "linear", "config.optim.schedule"),
        ("optim.decay_epochs", (40, 20), "config.optim.decay_epochs"),
        ("model.dtype", "float16", "config.model.dtype"),
        (
            "optim.groups",
            (("backbone", "^backbone/"), ("rest", ".*")),
            "config.optim.lr_multipliers.rest",
        ),
        ("optim.no_decay_groups", ("bias",), "config.optim.no_decay_groups"),
        ("checkpoint.every_steps", 0, "config.checkpoint.every_steps"),
        ("mesh.axis_sizes", (-1, 2), "config.mesh.axis_sizes"),
    ],
)
def test_validate_names_the_field(field, value, match):
    config = _ssan_module().get_config("smoke")
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.validate(config)


def test_validate_missing_section():
    config = _ssan_module().get_config("smoke")
    del config["checkpoint"]
    with pytest.raises(config_lib.ConfigError, match="config.checkpoint: missing section"):
        config_lib.validate(config)


def test_smoke_shrinking_is_tiny():
    config = ml_collections.ConfigDict(
        dict(
            train=dict(num_steps=0, log_every_steps=50),
            checkpoint=dict(every_steps=1000),
            eval=dict(every_epochs=1),
            data=dict(num_workers=4),
        )
    )
    config_lib.shrink_for_smoke(config)
    assert config.train.num_steps == 2 and config.checkpoint.every_steps == 2
    assert config.eval.every_epochs == 0 and config.data.num_workers == 0


def _parse_flags(argv, monkeypatch):
    # config_flags finds override names in sys.argv, so it must match argv.
    monkeypatch.setattr(sys, "argv", argv)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True)
    values(argv)
    return values.config


def test_overrides_apply_and_required_root_can_be_set(monkeypatch):
    config = _parse_flags(
        [
            "prog",
            "--config",
            f"{SSAN_CONFIG}:cuhk_pedes,smoke",
            "--config.optim.lr=3e-4",
            "--config.data.root=/data/cuhk",
        ],
        monkeypatch,
    )
    assert config.optim.lr == 3e-4 and config.data.root == "/data/cuhk"
    config_lib.validate(config)


def test_mistyped_override_fails(monkeypatch):
    with pytest.raises(Exception, match="lrr"):
        _parse_flags(["prog", "--config", SSAN_CONFIG, "--config.optim.lrr=3e-4"], monkeypatch)
