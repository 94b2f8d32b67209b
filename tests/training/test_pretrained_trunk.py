"""`config.model.pretrained_trunk` loads an ImageNet ResNet into the trunk at initialisation
(every model's trunk for mutual AlignedReID) and leaves the heads alone; real-data configs
without it warn in one line."""

from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from reid_jax import config_lib
from reid_jax.training import run_setup
from reid_jax.training.tasks import TASKS
from reid_jax.training.tasks.base import TrainDataInfo
from reid_jax.weights import WeightsError

CONFIGS = Path(__file__).parents[2] / "configs"


def _config(name, arg):
    return config_lib.load_config_file(f"{CONFIGS / name}.py:{arg}")


class _Setup:
    """The part of RunSetup that `initial_variables` reads, without a data pipeline."""

    def __init__(self, config):
        self.task = TASKS[config.task]
        info = TrainDataInfo(num_examples=0, steps_per_epoch=1, num_classes=5)
        model = self.task.create_model(config, info)
        self.init_variables = jax.jit(
            lambda key: self.task.init_variables(model, key, config=config)
        )
        self.mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from torch_compat import import_torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trunk") / "resnet18.pth"
    torch.save(import_torchvision().models.resnet18().state_dict(), path)
    return path


def test_trunk_changes_and_heads_do_not(resnet18_file, capsys):
    config = _config("alignedreid", "smoke,mutual")
    config.model.backbone_width = 1.0
    setup = _Setup(config)
    fresh = jax.device_get(setup.init_variables(jax.random.key(config.seed)))
    config.model.pretrained_trunk = str(resnet18_file)
    variables, _ = run_setup.initial_variables(setup, config)
    variables = jax.device_get(variables)
    want = torch.load(resnet18_file, weights_only=True)["layer1.0.conv1.weight"].numpy()
    for model in ("model_0", "model_1"):
        kernel = variables["params"][model]["backbone"]["layer1_0"]["conv1"]["kernel"]
        np.testing.assert_array_equal(kernel, want.transpose(2, 3, 1, 0))
        assert not np.array_equal(
            kernel, fresh["params"][model]["backbone"]["layer1_0"]["conv1"]["kernel"]
        )
        np.testing.assert_array_equal(
            variables["params"][model]["classifier"]["kernel"],
            fresh["params"][model]["classifier"]["kernel"],
        )
    assert "pretrained_trunk" in capsys.readouterr().out


def test_a_trunk_of_another_width_is_an_error(resnet18_file):
    config = _config("ssan", "smoke")  # ResNet-18 at width 0.125
    config.model.pretrained_trunk = str(resnet18_file)
    with pytest.raises(WeightsError, match=r"bn1/mean converted \[64\] vs model \[8\]"):
        run_setup.initial_variables(_Setup(config), config)


def test_paper_configs_warn_once_without_a_trunk(capsys):
    config = _config("ssan", "cuhk_pedes,smoke")
    config.model.update(dict(backbone_depth=18, backbone_width=0.125, lstm_hidden=64))
    run_setup.initial_variables(_Setup(config), config)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "pretrained_trunk is empty" in out
