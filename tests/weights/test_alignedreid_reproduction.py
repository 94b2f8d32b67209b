"""AlignedReID re-production Model -> AlignedReidModel: global, local features and logits."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_helpers import randomise_batch_norms, to_nhwc

from reid_jax.weights import WeightsError, convert_checkpoint

CONFIG = Path(__file__).parents[2] / "configs" / "alignedreid.py"


class ReproductionModel(nn.Module):
    """The re-production's `Model` (aligned_reid/model/Model.py names), eval behaviour per
    alignedreid §2: global average pool, per-row average, 1x1 conv + BN + ReLU, fc."""

    def __init__(self, torchvision, local_dim: int, num_classes: int):
        super().__init__()
        resnet = torchvision.models.resnet50()
        del resnet.fc
        self.base = resnet
        self.local_conv = nn.Conv2d(2048, local_dim, 1)
        self.local_bn = nn.BatchNorm2d(local_dim)
        self.fc = nn.Linear(2048, num_classes)

    def trunk(self, x):
        b = self.base
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x):
        feat = self.trunk(x)
        global_feat = F.adaptive_avg_pool2d(feat, 1).flatten(1)
        local = feat.mean(dim=-1, keepdim=True)
        local = F.relu(self.local_bn(self.local_conv(local)))[:, :, :, 0].permute(0, 2, 1)
        return global_feat, local, self.fc(global_feat)


def _config():
    spec = importlib.util.spec_from_file_location("alignedreid_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("market1501")


def test_converted_model_matches_the_reproduction(torchvision, tmp_path):
    torch.manual_seed(0)
    reference = ReproductionModel(torchvision, local_dim=128, num_classes=11)
    randomise_batch_norms(reference, (torch.randn(4, 3, 256, 128),), seed=2)
    path = tmp_path / "ckpt.pth"
    # The training checkpoint layout, saved from a DataParallel model ('module.' names).
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dicts": [state, {"state": {}, "param_groups": []}], "ep": 300,
                "scores": 0.9}, path)  # fmt: skip
    images = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        want = [t.numpy() for t in reference(images)]
    imported = convert_checkpoint("alignedreid_reproduction", path, _config())
    assert imported.info.num_classes == 11 and imported.metadata == {"ep": 300, "scores": 0.9}
    assert imported.kept_fresh == []
    model = imported.model
    (got,) = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        imported.variables, to_nhwc(images)
    )
    for name, expected in zip(("global", "local", "logits"), want, strict=True):
        assert got[name].shape == expected.shape, name
        diff = float(np.max(np.abs(np.asarray(got[name]) - expected)))
        print(f"alignedreid {name}: max abs diff {diff:.2e}")  # shown with pytest -rP
        assert diff <= 1e-4, (name, diff, float(np.max(np.abs(expected))))


def test_a_model_without_fc_keeps_a_fresh_classifier_and_wrong_files_fail(torchvision, tmp_path):
    reference = ReproductionModel(torchvision, local_dim=128, num_classes=3)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "model_weight.pth")
    imported = convert_checkpoint(
        "alignedreid_reproduction", tmp_path / "model_weight.pth", _config()
    )
    assert imported.kept_fresh == [
        "params/model_0/classifier/bias",
        "params/model_0/classifier/kernel",
    ]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra\.pth.*unused tensor model_0\.extra\.weight"):
        convert_checkpoint("alignedreid_reproduction", tmp_path / "extra.pth", _config())


def test_a_mutual_checkpoint_fills_every_model(torchvision, tmp_path):
    # train_ml.py saves state_dicts = [model_1 .. model_M, optimizer_1 .. optimizer_M].
    models = [ReproductionModel(torchvision, local_dim=32, num_classes=5) for _ in range(2)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=2e-4).state_dict() for m in models]
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dicts": [m.state_dict() for m in models] + optimizers, "ep": 3,
                "scores": 0}, path)  # fmt: skip
    imported = convert_checkpoint("alignedreid_reproduction", path, _config())
    assert imported.config.model.num_models == 2 and imported.config.model.local_dim == 32
    assert imported.metadata == {"ep": 3, "scores": 0} and imported.kept_fresh == []
    params = imported.variables["params"]
    for index, model in enumerate(models):
        np.testing.assert_array_equal(
            params[f"model_{index}"]["classifier"]["kernel"], model.fc.weight.detach().numpy().T
        )
        np.testing.assert_array_equal(
            params[f"model_{index}"]["backbone"]["layer4_2"]["conv3"]["kernel"],
            model.base.layer4[2].conv3.weight.detach().numpy().transpose(2, 3, 1, 0),
        )
