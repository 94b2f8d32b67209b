"""The joint objective gives every player exactly its own gradient, and one jitted step with
three optimizers updates all three."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reid_jax.losses import joint_space
from reid_jax.models.attribute.model import ConceptGenerator, Discriminator
from reid_jax.training.tasks import attribute_joint_loss as jl

A, D, S = 6, 8, 4
GROUPS = ((2, 5),)


def _setup():
    rng = np.random.default_rng(0)
    age = np.eye(3, dtype=int)[rng.integers(0, 3, 5)]
    vectors = np.concatenate([rng.integers(0, 2, (5, 2)), age, rng.integers(0, 2, (5, 1))], 1)
    image_sids = np.array([0, 0, 1, 2, 3, 3])
    concept_sids = np.array([0, 1, 2, 3])
    generator = ConceptGenerator(embed_dim=D, hidden=(16,))
    disc = Discriminator(num_attributes=A, hidden=(16,))
    key = jax.random.key(0)
    params = {
        # the image branch's outputs stand in for its parameters (a linear "branch")
        "image": {"w": jax.random.normal(key, (5, D + A)) * 0.3},
        "concept": generator.init(key, jnp.asarray(vectors[:4]), train=False)["params"],
        "sid": jax.random.normal(jax.random.key(1), (S, D)),
        "disc": disc.init(key, jnp.zeros((2, D)))["params"],
    }
    stats = generator.init(key, jnp.asarray(vectors[:4]), train=False)["batch_stats"]
    pixels = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    batch = dict(
        pixels=pixels,
        image_labels=jnp.asarray(vectors[image_sids]),
        image_sids=jnp.asarray(image_sids),
        concept_labels=jnp.asarray(vectors[concept_sids]),
        concept_sids=jnp.asarray(concept_sids),
    )
    return generator, disc, params, stats, batch


def _objective_inputs(params, generator, disc, stats, batch):
    out = batch["pixels"] @ params["image"]["w"]
    image = {"embedding": out[:, :D], "attribute_logits": out[:, D:]}
    concepts = generator.apply(
        {"params": params["concept"], "batch_stats": stats}, batch["concept_labels"], train=False
    )["embedding"]
    labels = dict(
        image_labels=batch["image_labels"],
        image_sids=batch["image_sids"],
        concept_labels=batch["concept_labels"],
        concept_sids=batch["concept_sids"],
    )
    return (
        image,
        concepts,
        lambda p, e: disc.apply({"params": p}, e),
        params["disc"],
        params["sid"],
        labels,
    )


def _objective(params, generator, disc, stats, batch, stage=2):
    *inputs, labels = _objective_inputs(params, generator, disc, stats, batch)
    return jl.joint_objective(*inputs, **labels, stage=stage, softmax_groups=GROUPS)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6)


def test_each_player_gets_only_its_own_gradient():
    generator, disc, params, stats, batch = _setup()
    grads = jax.grad(lambda p: _objective(p, generator, disc, stats, batch)[0])(params)

    def image_side(p):
        out = batch["pixels"] @ p["image"]["w"]
        emb, logits = out[:, :D], out[:, D:]
        concepts = jax.lax.stop_gradient(
            generator.apply(
                {"params": p["concept"], "batch_stats": stats}, batch["concept_labels"], train=False
            )["embedding"]
        )
        return (
            joint_space.attribute_loss(logits, batch["image_labels"], GROUPS)
            + jl.semantic_id_loss(emb, batch["image_sids"], jax.lax.stop_gradient(p["sid"]), 16.0)
            + joint_space.global_ranking_loss(
                emb, batch["image_labels"], concepts, batch["concept_labels"]
            )
        )

    def concept_side(p):
        emb = jax.lax.stop_gradient((batch["pixels"] @ p["image"]["w"])[:, :D])
        concepts = generator.apply(
            {"params": p["concept"], "batch_stats": stats}, batch["concept_labels"], train=False
        )["embedding"]
        d = disc.apply({"params": params["disc"]}, concepts)  # D fixed: not an argument
        return (
            jl.semantic_id_loss(concepts, batch["concept_sids"], p["sid"], 16.0)
            + joint_space.global_ranking_loss(
                emb, batch["image_labels"], concepts, batch["concept_labels"]
            )
            + 0.1
            * joint_space.concept_adversarial_loss(
                d["real_logits"], d["attribute_logits"], batch["concept_labels"], GROUPS
            )
        )

    def disc_side(d_params):
        out = batch["pixels"] @ params["image"]["w"]
        concepts = generator.apply(
            {"params": params["concept"], "batch_stats": stats},
            batch["concept_labels"],
            train=False,
        )["embedding"]
        real = disc.apply({"params": d_params}, out[:, :D])
        fake = disc.apply({"params": d_params}, concepts)
        return joint_space.discriminator_loss(
            real["real_logits"],
            fake["real_logits"],
            real["attribute_logits"],
            batch["image_labels"],
            GROUPS,
        )

    _close(grads["image"], jax.grad(image_side)(params)["image"])
    _close(grads["concept"], jax.grad(concept_side)(params)["concept"])
    _close(grads["disc"], jax.grad(disc_side)(params["disc"]))
    # W_s learns from both semantic-ID terms (image side + concept side).
    sid_image = jax.grad(
        lambda w: jl.semantic_id_loss(
            (batch["pixels"] @ params["image"]["w"])[:, :D], batch["image_sids"], w, 16.0
        )
    )
    _close(grads["sid"], jax.grad(concept_side)(params)["sid"] + sid_image(params["sid"]))


def test_stage_one_trains_only_the_image_side():
    generator, disc, params, stats, batch = _setup()
    loss, terms = _objective(params, generator, disc, stats, batch, stage=1)
    assert set(terms) == {"attr", "sid_image"}
    grads = jax.grad(lambda p: _objective(p, generator, disc, stats, batch, stage=1)[0])(params)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads["disc"]))
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads["concept"]))
    assert float(jnp.abs(grads["image"]["w"]).sum()) > 0
    with pytest.raises(ValueError, match="stage"):
        _objective(params, generator, disc, stats, batch, stage=3)


def test_one_jitted_step_updates_every_player_with_its_own_optimizer():
    generator, disc, params, stats, batch = _setup()
    labels = {"image": "image", "concept": "attribute", "sid": "attribute", "disc": "disc"}
    tx = optax.multi_transform(
        {
            "image": optax.adam(3.5e-4),
            "attribute": optax.adam(1e-4),
            "disc": optax.adam(1e-4, b1=0.5),
        },
        labels,
    )
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        (loss, terms), grads = jax.value_and_grad(
            lambda p: _objective(p, generator, disc, stats, batch), has_aux=True
        )(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, terms, grads

    new, state, terms, grads = step(params, state)
    assert set(terms) == {"attr", "sid_image", "sid_concept", "rank", "adv", "disc"}
    # Adam's first step moves every parameter with a gradient by its own lr (sign of the grad).
    for name, lr in (("image", 3.5e-4), ("concept", 1e-4), ("disc", 1e-4)):
        moved = jax.tree.map(lambda a, b: a - b, new[name], params[name])
        for delta, grad in zip(jax.tree.leaves(moved), jax.tree.leaves(grads[name]), strict=True):
            expected = -lr * np.sign(np.asarray(grad))
            np.testing.assert_allclose(delta, expected, atol=lr * 1e-3)


@pytest.mark.parametrize("stage", [1, 2])
def test_traced_stage_equals_the_static_stage(stage):
    generator, disc, params, stats, batch = _setup()
    static = _objective(params, generator, disc, stats, batch, stage=stage)[0]
    traced = jax.jit(lambda p, s: _objective(p, generator, disc, stats, batch, stage=s)[0])(
        params, jnp.asarray(stage)
    )
    np.testing.assert_allclose(traced, static, rtol=1e-5)


def test_weights_scale_their_terms_and_unknown_names_fail():
    generator, disc, params, stats, batch = _setup()
    loss, terms = _objective(params, generator, disc, stats, batch)
    weights = {"attr": 2.0, "adv": 0.0, "disc": 0.0, "sid_image": 0.5}
    *inputs, labels = _objective_inputs(params, generator, disc, stats, batch)
    out = jl.joint_objective(
        *inputs,
        **labels,
        stage=2,
        weights=weights,
        softmax_groups=GROUPS,
    )[0]
    expected = 2 * terms["attr"] + 0.5 * terms["sid_image"] + terms["sid_concept"] + terms["rank"]
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss weights"):
        jl.joint_objective(
            *_objective_inputs(params, generator, disc, stats, batch)[:-1],
            **_objective_inputs(params, generator, disc, stats, batch)[-1],
            stage=2,
            weights={"adversary": 1.0},
        )
