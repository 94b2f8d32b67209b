"""AptmModel: full-size parameter table (aptm §3.4) by eval_shape, outputs of the tiny model and
of each method, dtypes, remat."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from reid_jax.models.aptm.model import TINY_FIELDS, AptmModel

KEY = jax.random.key(0)
B, T, K = 3, 9, 4


def count(shapes, keep=lambda path: True):
    return sum(int(np.prod(s)) for path, s in shapes.items() if keep(path))


def param_shapes(model, *inputs):
    abstract = jax.eval_shape(functools.partial(model.init, train=False), KEY, *inputs)
    assert set(abstract) == {"params"}
    flat = traverse_util.flatten_dict(abstract["params"])
    return {"/".join(k): v.shape for k, v in flat.items()}


def abstract_inputs(image_size, length=56, masked=10):
    return (
        jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, length), jnp.int32),
        jax.ShapeDtypeStruct((1, length), jnp.int32),
        jax.ShapeDtypeStruct((1, masked), jnp.int32),
    )


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(B, *TINY_FIELDS["image_size"], 3)).astype(np.float32)
    ids = rng.integers(5, TINY_FIELDS["vocab_size"], (B, T)).astype(np.int32)
    mask = (np.arange(T)[None] < np.array([[T], [4], [2]])).astype(np.int32)
    positions = rng.integers(0, T, (B, K)).astype(np.int32)
    return images, np.where(mask, ids, 0), mask, positions


def test_full_size_parameter_table():
    """aptm §3.4, to the parameter."""
    shapes = param_shapes(AptmModel(), *abstract_inputs((384, 128)))

    def layer_range(first, last):
        names = tuple(f"text_encoder/bert/encoder/layer_{i}/" for i in range(first, last + 1))
        return lambda path: path.startswith(names)

    assert count(shapes, lambda p: p.startswith("vision_encoder/")) == 86_753_016
    assert count(shapes, lambda p: p.startswith("text_encoder/bert/embeddings/")) == 23_837_184
    assert count(shapes, layer_range(0, 5)) == 42_527_232
    assert count(shapes, layer_range(6, 11)) == 59_069_952
    assert count(shapes, lambda p: "/crossattention/" in p) == 16_542_720
    assert count(shapes, lambda p: p.startswith("text_encoder/cls/")) == 622_650
    heads = ("vision_proj/", "text_proj/", "itm_head/", "temp")
    assert count(shapes, lambda p: p.startswith(heads)) == 1_646_595
    assert count(shapes) == 214_456_629  # ≈ 214.5 M
    assert not any("decoder" in p for p in shapes)  # MLM decoder tied to the word embeddings
    assert shapes["text_encoder/bert/encoder/layer_6/crossattention/self/key/kernel"] == (1024, 768)
    assert shapes["itm_head/layers_3/kernel"] == (1536, 2)
    assert shapes["temp"] == ()
    assert not any("crossattention" in p for p in shapes if count({p: ()}, layer_range(0, 5)))


@pytest.fixture(scope="module")
def tiny():
    model = AptmModel(**TINY_FIELDS)
    batch = tiny_batch()
    variables = jax.jit(functools.partial(model.init, train=False))(KEY, *batch)
    outputs = jax.jit(functools.partial(model.apply, train=False))(variables, *batch)
    return model, variables, batch, outputs


def test_tiny_outputs(tiny):
    """Shapes and dtypes of every output; unit features; token 0 is the mean image token."""
    model, variables, _, out = tiny
    tokens, width, vocab = 1 + 2 * 1, 64, TINY_FIELDS["vocab_size"]
    expected = {
        "image_tokens": (B, tokens, width),
        "image_feats": (B, 8),
        "text_tokens": (B, T, 16),
        "text_feats": (B, 8),
        "fused_tokens": (B, T, 16),
        "itm_logits": (B, 2),
        "mlm_logits": (B, K, vocab),
        "temp": (),
    }
    assert {k: v.shape for k, v in out.items()} == expected
    assert all(v.dtype == jnp.float32 for v in out.values())
    for name in ("image_feats", "text_feats"):
        np.testing.assert_allclose(np.linalg.norm(out[name], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["temp"], 0.07)
    np.testing.assert_allclose(
        out["image_tokens"][:, 0], out["image_tokens"][:, 1:].mean(axis=1), atol=1e-5
    )


def test_methods_agree_with_call(tiny):
    model, variables, (images, ids, mask, positions), out = tiny
    apply = functools.partial(model.apply, variables, train=False)
    image = apply(images, method=model.encode_image)
    text = apply(ids, mask, method=model.encode_text)
    fused = apply(image["image_tokens"], text["text_tokens"], mask, method=model.match)
    mlm = apply(ids, mask, image["image_tokens"], positions, method=model.masked_lm)
    for name, value in {**image, **text, **fused, **mlm}.items():
        np.testing.assert_allclose(value, out[name], atol=2e-5, err_msg=name)
    np.testing.assert_allclose(model.apply(variables, method=model.temperature), 0.07)


def test_mlm_logits_use_the_word_embeddings(tiny):
    model, variables, (images, ids, mask, positions), out = tiny
    params = jax.tree.map(lambda x: x, variables["params"])
    table = params["text_encoder"]["bert"]["embeddings"]["word_embeddings"]["embedding"]
    params["text_encoder"]["bert"]["embeddings"]["word_embeddings"]["embedding"] = table.at[7].add(
        1.0
    )
    changed = model.apply({"params": params}, images, ids, mask, positions, train=False)[
        "mlm_logits"
    ]
    # logits of token 7 move even where no input id is 7 (the decoder reads the table)
    assert not np.allclose(changed[..., 7], out["mlm_logits"][..., 7])


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = AptmModel(**TINY_FIELDS, dtype=jnp.bfloat16)
    batch = tiny_batch()
    abstract = jax.eval_shape(functools.partial(model.init, train=False), KEY, *batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract))
    out = jax.eval_shape(functools.partial(model.apply, train=False), abstract, *batch)
    for name in ("image_feats", "text_feats", "itm_logits", "mlm_logits", "temp"):
        assert out[name].dtype == jnp.float32, name
    assert out["text_tokens"].dtype == jnp.bfloat16


def test_remat_keeps_parameter_paths():
    inputs = abstract_inputs(TINY_FIELDS["image_size"], T, K)
    plain, remat = AptmModel(**TINY_FIELDS), AptmModel(**TINY_FIELDS, remat=True)
    assert param_shapes(plain, *inputs) == param_shapes(remat, *inputs)


@pytest.mark.slow
def test_remat_gives_the_same_gradients():
    """A shallower tiny model (one shifted Swin block, one text and one fusion layer) to keep
    the two compilations short; dropout and stochastic depth on."""
    fields = dict(TINY_FIELDS, swin_depths=(2, 1, 1, 1), text_num_layers=2, fusion_layer=1)
    fields["drop_path_rate"] = 0.3
    plain, remat = AptmModel(**fields), AptmModel(**fields, remat=True)
    batch = tiny_batch()
    variables = jax.jit(functools.partial(plain.init, train=False))(KEY, *batch)
    weights = jax.tree.map(
        lambda o: jnp.asarray(np.random.default_rng(1).normal(size=o.shape), jnp.float32),
        jax.eval_shape(functools.partial(plain.apply, train=False), variables, *batch),
    )

    def grads(model):
        def loss(params):
            out = model.apply(
                {"params": params}, *batch, train=True, rngs={"dropout": jax.random.key(2)}
            )
            return sum(
                jnp.sum(o * w)
                for o, w in zip(jax.tree.leaves(out), jax.tree.leaves(weights), strict=True)
            )

        return jax.jit(jax.grad(loss))(variables["params"])

    a, b = traverse_util.flatten_dict(grads(plain)), traverse_util.flatten_dict(grads(remat))
    assert a.keys() == b.keys()
    # one scale for all: some gradients are zero up to rounding (attention key biases)
    scale = max(np.abs(grad).max() for grad in a.values())
    for path, grad in a.items():
        np.testing.assert_allclose(b[path] / scale, grad / scale, atol=1e-5, err_msg=str(path))
    assert np.abs(a[("vision_encoder", "layers_0", "blocks_1", "attn", "qkv", "kernel")]).max() > 0
    cross_key = ("text_encoder", "bert", "encoder", "layer_1", "crossattention", "self", "key")
    assert np.abs(a[(*cross_key, "kernel")]).max() > 0
