"""Shared fixtures of the search-path tests: a small AlignedReID bundle and image folders."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from reid_jax.export.run_export import write_task_bundle
from reid_jax.inference import load_bundle
from reid_jax.training.tasks import alignedreid
from reid_jax.training.tasks.base import TrainDataInfo

REPO = Path(__file__).resolve().parents[2]


def smoke_config(name: str):
    """configs/<name>.py:smoke."""
    spec = importlib.util.spec_from_file_location(f"{name}_cfg", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def write_image(path: Path, seed: int, size=(20, 40)) -> None:
    """A random RGB image of `size` (width, height) at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="session")
def alignedreid_bundle(tmp_path_factory):
    """An AlignedReID smoke model's bundle (init weights), loaded."""
    config = smoke_config("alignedreid")
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=4)
    model = alignedreid.create_model(config, info)
    variables = alignedreid.init_variables(model, jax.random.key(0), config)
    path = write_task_bundle(
        tmp_path_factory.mktemp("bundle") / "ar", alignedreid, model, variables, config, info
    )
    return load_bundle(path)
