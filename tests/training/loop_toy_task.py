"""A seconds-fast stand-in task for tests of the generic loop (not a real method).

Model: Dense -> BatchNorm -> Dense classifier over 8-d inputs; data: a fixed random table served
by a checkpointable grain iterator, shuffled per epoch, so resumed runs must replay it exactly.
`config.loss.nan_from_step` > 0 makes the loss NaN from that step on (NaN-check test).
"""

from __future__ import annotations

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from reid_jax.training.tasks.base import TrainDataInfo

NUM_EXAMPLES, NUM_CLASSES, DIM = 64, 4, 8


class ToyModel(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        h = nn.Dense(16, name="body")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="norm")(h)
        return nn.Dense(self.num_classes, name="head")(nn.relu(h))


class _Table:
    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(NUM_EXAMPLES, DIM)).astype(np.float32)
        self.y = rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype(np.int32)

    def __len__(self):
        return NUM_EXAMPLES

    def __getitem__(self, i):
        return {"x": self.x[i], "label": self.y[i]}


def make_train_data(config, workdir, *, shard_index, shard_count):
    del workdir
    ds = grain.MapDataset.source(_Table(0)).shuffle(seed=config.seed).repeat()
    ds = ds[shard_index::shard_count].batch(
        config.train.batch_size // shard_count, drop_remainder=True
    )
    info = TrainDataInfo(
        num_examples=NUM_EXAMPLES,
        steps_per_epoch=NUM_EXAMPLES // config.train.batch_size,
        num_classes=NUM_CLASSES,
    )
    return ds.to_iter_dataset(), info


def create_model(config, info):
    return ToyModel(info.num_classes + config.model.head_extra)


def init_variables(model, rng, config):
    del config
    return dict(model.init(rng, jnp.zeros((2, DIM)), train=False))


def loss_fn(model, params, batch_stats, batch, key, *, step, config, info):
    del info
    noise = 0.01 * jax.random.normal(key, batch["x"].shape)  # makes the key matter
    logits, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["x"] + noise,
        train=True,
        mutable=["batch_stats"],
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    nan_from = config.loss.nan_from_step
    loss = jnp.where((nan_from > 0) & (step + 1 >= nan_from), jnp.nan, loss)
    return loss, ({"loss": loss}, mutated["batch_stats"])


def evaluate(model, variables, config, workdir, *, mesh, info):
    del config, workdir, mesh, info
    table = _Table(0)
    logits = model.apply(variables, table.x, train=False)
    return {"toy": {"accuracy": float(jnp.mean(jnp.argmax(logits, -1) == table.y))}}


def toy_config() -> ml_collections.ConfigDict:
    """A complete, valid config for the toy task: 12 steps of batch 8 (8 steps per epoch),
    checkpoint every 4 steps, evaluation every epoch."""
    config = ml_collections.ConfigDict()
    config.task = "toy"
    config.seed = 3
    config.init_from = ""
    config.init_from_rules = ()
    config.init_from_strict = False
    config.data = ml_collections.ConfigDict(dict(num_workers=0, bad_images="stop"))
    # head_extra > 0 widens the classifier (a fine-tuning target with other classes).
    config.model = ml_collections.ConfigDict(
        dict(dtype="float32", matmul_precision="default", head_extra=0)
    )
    config.loss = ml_collections.ConfigDict(dict(nan_from_step=0))
    config.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=1e-2,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            no_decay_groups=(),
            groups=(("body", "^body/"), ("rest", ".*")),
            lr_multipliers=ml_collections.ConfigDict(dict(body=0.1, rest=1.0)),
            schedule="step",
            decay_epochs=(1,),
            decay_factor=0.1,
            warmup_steps=0,
            clip_norm=0.0,
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=8,
            num_epochs=1,
            num_steps=12,
            log_every_steps=1,
            grad_accum_steps=1,
            ema_decay=0.0,
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(every_epochs=1, batch_size=8, select_metric="toy/accuracy", use_ema=False)
    )
    config.mesh = ml_collections.ConfigDict(
        dict(axis_names=("data",), axis_sizes=(-1,), distributed=False)
    )
    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=4, max_to_keep=2, async_save=False)
    )
    return config
