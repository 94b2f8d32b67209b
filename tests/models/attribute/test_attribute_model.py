import functools

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.data.attribute_examples import market_groups
from reid_jax.models.attribute.model import (
    AttributeImageBranch,
    ConceptGenerator,
    Discriminator,
)

KEY = jax.random.key(0)
GROUPS = ((0,), (1, 2, 3), (4, 5))


def _tiny_branch():
    return AttributeImageBranch(
        groups=GROUPS, embed_dim=8, reduce_dim=16, backbone_depth=18, width_multiplier=0.125
    )


def test_image_branch_shapes_and_attention_sums_to_one():
    model = _tiny_branch()
    images = jax.random.normal(KEY, (2, 64, 32, 3))
    variables = model.init(KEY, images, train=False)
    out = model.apply(variables, images, train=False)
    assert out["embedding"].shape == (2, 8) and out["attribute_logits"].shape == (2, 6)
    assert out["attention"].shape == (2, 3, 4, 2)  # 64 x 32 / 16 with last stride 1
    np.testing.assert_allclose(out["attention"].sum(axis=(2, 3)), 1.0, rtol=1e-5)


def test_each_group_head_reads_only_its_own_attention_pool():
    """Scaling group 1's head weights changes only group 1's attribute columns."""
    model = _tiny_branch()
    images = jax.random.normal(KEY, (2, 64, 32, 3))
    variables = model.init(KEY, images, train=False)
    head = dict(variables["params"]["head_1"])
    head["kernel"] = head["kernel"] * 3.0
    changed = {**variables, "params": {**variables["params"], "head_1": head}}
    a = model.apply(variables, images, train=False)["attribute_logits"]
    b = model.apply(changed, images, train=False)["attribute_logits"]
    differs = np.abs(np.asarray(a - b)).max(axis=0) > 1e-6
    np.testing.assert_array_equal(differs, [False, True, True, True, False, False])


def test_concept_generator_and_discriminator_shapes():
    attrs = jnp.asarray(np.random.default_rng(0).integers(0, 2, (5, 30)))
    generator = ConceptGenerator(embed_dim=8, hidden=(16, 32))
    gv = generator.init(KEY, attrs, train=False)
    concept = generator.apply(gv, attrs, train=True, mutable=["batch_stats"])[0]["embedding"]
    assert concept.shape == (5, 8)
    disc = Discriminator(num_attributes=30, hidden=(16, 8))
    out = disc.apply(disc.init(KEY, concept), concept)
    assert out["real_logits"].shape == (5,) and out["attribute_logits"].shape == (5, 30)


def test_full_size_market_branch_by_eval_shape():
    """ResNet-50 with last stride 1 at 256 x 128: a 16 x 8 map (128 attention positions)."""
    model = AttributeImageBranch(groups=market_groups())
    images = jax.ShapeDtypeStruct((2, 256, 128, 3), jnp.float32)
    abstract = jax.eval_shape(functools.partial(model.init, train=False), KEY, images)
    out = jax.eval_shape(functools.partial(model.apply, train=False), abstract, images)
    assert out["attention"].shape == (2, 12, 16, 8)
    assert out["embedding"].shape == (2, 512) and out["attribute_logits"].shape == (2, 30)
    embed = abstract["params"]["embed"]["kernel"]
    assert embed.shape == (512 * 13, 512)  # [v_1; ...; v_12; GAP] -> d
    assert sorted(c for g in market_groups() for c in g) == list(range(30))
