"""The attribute joint-space task: the stage switch with per-player optimizers in one jitted
step, and an end-to-end smoke run of the full model through the loop (train + evaluate)."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.data import attribute_examples
from reid_jax.training import loop, optim
from reid_jax.training import step as step_lib
from reid_jax.training.state import create_train_state
from reid_jax.training.tasks import attribute_joint
from reid_jax.training.tasks.base import TrainDataInfo

CONFIG_FILE = Path(__file__).parents[2] / "configs" / "attribute_joint.py"
TINY_SIZES = dict(
    cuhk_train_ids=2,
    cuhk_val_ids=0,
    cuhk_test_ids=1,
    cuhk_images_per_id=(2, 2),
    market_train_ids=6,
    market_test_ids=4,
    market_train_images_per_id=(3, 5),
    market_gallery_images_per_id=(2, 4),
    market_distractors=2,
    market_junk=2,
    mals_pairs=0,
)


def _config(arg):
    spec = importlib.util.spec_from_file_location("attribute_joint_config", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _leaves_equal(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_predicted_columns_threshold_binary_and_argmax_one_hot_groups():
    from reid_jax.training.tasks.attribute_joint_eval import predicted_columns

    logits = np.array([[0.5, -1.0, 0.2, 3.0, 1.0], [-0.1, 2.0, -5.0, -4.0, -6.0]])
    got = predicted_columns(logits, ((2, 5),))
    assert got.tolist() == [[1, 0, 0, 1, 0], [0, 1, 0, 1, 0]]


def test_stage_switch_starts_generator_and_discriminator_with_their_own_optimizers():
    """Stage 1 (step 0): the image side moves, ψ and D stay bit-identical (frozen groups);
    stage 2 (step 1): all move; the stage metric follows the step."""
    config = _config("smoke")
    config.train.stage1_epochs = 1
    for name in ("generator", "discriminator"):
        config.optim.group_options[name].start_epoch = 1
    groups = attribute_examples.market_groups()
    rng = np.random.default_rng(0)
    group_attributes = np.concatenate(
        [
            rng.integers(0, 2, (4, 9)),
            np.eye(4, dtype=int)[[0, 1, 2, 3]],
            rng.integers(0, 2, (4, 17)),
        ],
        axis=1,
    )
    info = TrainDataInfo(
        num_examples=16,
        steps_per_epoch=1,
        num_classes=4,
        extras=dict(
            images_per_identity=4,
            groups=[list(g) for g in groups],
            softmax_groups=[[9, 13]],
            group_attributes=group_attributes.tolist(),
            group_sids=[0, 1, 2, 3],
            sid_attributes=group_attributes.tolist(),
        ),
    )
    model = attribute_joint.create_model(config, info)
    variables = attribute_joint.init_variables(model, jax.random.key(0), config)
    tx = optim.make_optimizer(config.optim, variables["params"], steps_per_epoch=1, total_steps=4)
    state = create_train_state(variables, tx)
    batch = {
        "image": jnp.asarray(rng.normal(size=(16, 64, 32, 3)), jnp.float32),
        "label": jnp.repeat(jnp.arange(4, dtype=jnp.int32), 4),
    }

    @jax.jit
    def train_step(state):
        key = jax.random.fold_in(jax.random.key(1), state.step)
        return step_lib.gradient_step(
            attribute_joint, model, state, batch, key, tx=tx, config=config, info=info
        )

    first, metrics1 = train_step(state)
    second, metrics2 = train_step(first)
    assert float(metrics1["stage"]) == 1.0 and float(metrics2["stage"]) == 2.0
    for player in ("generator", "discriminator"):
        assert _leaves_equal(first.params[player], state.params[player])
        assert not _leaves_equal(second.params[player], first.params[player])
    for state_a, state_b in ((state, first), (first, second)):
        assert not _leaves_equal(
            state_a.params["image"]["backbone"], state_b.params["image"]["backbone"]
        )
    # Stage 1 has no concept terms; stage 2 reports the adversary and the discriminator.
    assert float(metrics2["disc"]) > 0 and float(metrics2["adv"]) > 0


@pytest.mark.slow
def test_full_model_trains_and_evaluates_on_the_attribute_protocol(tmp_path):
    config = _config("smoke")
    config.data.root = str(tmp_path / "data")
    config.data.embedded_image_size = (64, 32)
    config.data.embedded_sizes = TINY_SIZES
    config.checkpoint.async_save = False
    results = loop.train_and_evaluate(config, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for term in ("attr", "sid_image", "sid_concept", "rank", "adv", "disc"):
        assert np.isfinite(train[-1][f"train/{term}"])
    assert train[-1]["lr/discriminator"] > 0
    assert set(results) >= {"joint", "prediction", "chance_R1", "num_queries"}
    for variant in ("joint", "prediction"):
        metrics = results[variant]
        assert 0.0 <= metrics["R1"] <= metrics["R5"] <= metrics["R10"] <= 100.0
        assert 0.0 < metrics["mAP"] <= 100.0 and 0.0 < metrics["mAP_trapezoid"] <= 100.0
    assert 1 <= results["num_queries"] <= TINY_SIZES["market_test_ids"]
    assert 0.0 <= results["recognition"]["accuracy"] <= 100.0
    assert (tmp_path / "run" / "eval" / "rank_list_first.png").stat().st_size > 0
