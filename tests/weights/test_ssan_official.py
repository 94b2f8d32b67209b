"""Official SSAN checkpoint -> SsanModel: the six embeddings (global, parts, relation of
images and captions) match the PyTorch network built with the official names, and the saved
ID classifiers land in place (the global one, never saved officially, stays fresh)."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from ssan_reference import IdClassifiers, TextImgPersonReidNet
from torch_helpers import randomise_batch_norms, to_nhwc

from reid_jax.weights import convert_checkpoint, read_checkpoint

CONFIG = Path(__file__).parents[2] / "configs" / "ssan.py"
VOCAB, CLASSES, PARTS = 40, 7, 6


def _paper_config():
    spec = importlib.util.spec_from_file_location("ssan_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("cuhk_pedes")
    config.model.remat = "none"
    config.data.max_length = 12
    return config


@pytest.fixture(scope="module")
def official(torchvision, tmp_path_factory):
    torch.manual_seed(0)
    network = TextImgPersonReidNet(torchvision, VOCAB, PARTS)
    captions = torch.randint(1, VOCAB, (3, 12))
    lengths = torch.tensor([12, 5, 8])
    for i, length in enumerate(lengths.tolist()):
        captions[i, length:] = 0
    images = torch.randn(2, 3, 384, 128)
    # Trunk and MV-NLN BatchNorms get measured, then perturbed, running statistics.
    randomise_batch_norms(network, (torch.randn(4, 3, 384, 128),), seed=1)
    path = tmp_path_factory.mktemp("ssan") / "best.pth.tar"
    torch.save(
        {
            "network": network.state_dict(),
            "WN": IdClassifiers(PARTS, 512, CLASSES).state_dict(),
            "WL": IdClassifiers(PARTS, 1024, CLASSES).state_dict(),
            "epoch": 17,
            "test_best": np.float64(61.4),  # cmc[0], as the official script saves it
        },
        path,
    )
    with torch.no_grad():
        image = [t.numpy() for t in network.img_embedding(images)]
        text = [t.numpy() for t in network.txt_embedding(captions, lengths)]
    inputs = (to_nhwc(images), captions.numpy().astype(np.int32), lengths.numpy().astype(np.int32))
    # Converted once for both tests (a full-size ResNet-50 + BiLSTM model).
    imported = convert_checkpoint("ssan_official", path, _paper_config())
    return path, imported, inputs, image, text


def test_six_embeddings_match_the_official_network(official):
    _, imported, (images, captions, lengths), image, text = official
    model, variables = imported.model, imported.variables
    got_image = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_image))(
        variables, images
    )
    got_text = jax.jit(lambda v, c, n: model.apply(v, c, n, method=model.encode_text))(
        variables, captions, lengths
    )
    for name, got, (glob, parts, relation) in (
        ("image", got_image, image),
        ("text", got_text, text),
    ):
        # Torch layouts: global [N, D], parts [N, D, K], relation [N, R, K].
        for level, want in (
            ("global", glob),
            ("parts", parts.transpose(0, 2, 1)),
            ("relation", relation.transpose(0, 2, 1)),
        ):
            assert got[level].shape == want.shape, (name, level)
            diff = float(np.max(np.abs(np.asarray(got[level]) - want)))
            print(f"ssan {name} {level}: max abs diff {diff:.2e}")  # shown with pytest -rP
            assert diff <= 1e-4, (name, level, diff, float(np.max(np.abs(want))))


def test_sizes_classifiers_and_metadata_come_from_the_file(official):
    path, imported = official[:2]
    assert imported.config.model.vocab_size == VOCAB and imported.info.num_classes == CLASSES
    assert imported.metadata == {"epoch": 17, "test_best": 61.4}
    params = imported.variables["params"]
    wl = read_checkpoint(path).sub("WL.")
    np.testing.assert_array_equal(params["classifier_parts"]["kernel"][3], wl["W.3.block.weight"].T)
    assert imported.kept_fresh == [
        "params/classifier_global/bias",
        "params/classifier_global/kernel",
    ]
