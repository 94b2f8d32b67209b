"""Hostile files never run code (issue 14, item 6): a weights file, a converted-weights or
features .npz and a bundle's params.npz that pickle a callable writing a marker file are
refused with an error naming the file, and the marker is never written. Each file is first
shown to be live: an unsafe load (weights_only=False, allow_pickle=True) does write it."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from reid_jax import cli
from reid_jax.data.errors import DatasetFormatError
from reid_jax.evaluation.features_file import load_features
from reid_jax.inference import BundleError, load_bundle
from reid_jax.inference.bundle import PARAMS_FILE, SUPPORTED_VERSIONS
from reid_jax.weights.flat import load_weights_npz
from reid_jax.weights.readers import WeightsError, read_checkpoint


class _WritesMarker:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _assert_live(marker, unsafe_load):
    """The payload really runs under an unsafe load (so the refusals below mean something)."""
    assert not marker.exists()
    unsafe_load()
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("name", ["evil.pth", "evil.pt", "evil.bin", "evil.pth.tar", "evil.ckpt"])
@pytest.mark.parametrize("zip_format", [True, False])
def test_pytorch_files_with_a_pickled_callable_are_refused_unrun(tmp_path, name, zip_format):
    marker = tmp_path / "marker"
    path = tmp_path / name
    torch.save({"weight": torch.zeros(2), "hook": _WritesMarker(marker)}, path,
               _use_new_zipfile_serialization=zip_format)  # fmt: skip
    _assert_live(marker, lambda: torch.load(path, weights_only=False))
    with pytest.raises(WeightsError, match=rf"{name}: refused: .*system"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", ["evil.pth", "evil.pkl"])
def test_plain_pickles_are_refused_unrun(tmp_path, name):
    marker = tmp_path / "marker"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"hook": _WritesMarker(marker)}))
    _assert_live(marker, lambda: pickle.loads(path.read_bytes()))
    with pytest.raises(WeightsError, match=rf"{name}: (refused|unknown weights format)"):
        read_checkpoint(path)
    assert not marker.exists()


def _hostile_npz(path, marker, **arrays):
    hook = np.empty((), dtype=object)
    hook[()] = _WritesMarker(marker)
    np.savez(path, hook=hook, **arrays)
    _assert_live(marker, lambda: np.load(path, allow_pickle=True)["hook"])


def test_npz_readers_refuse_object_arrays_unrun(tmp_path):
    marker = tmp_path / "marker"
    weights = tmp_path / "weights.npz"
    _hostile_npz(weights, marker, w=np.zeros(3, np.float32))
    with pytest.raises(WeightsError, match=r"weights\.npz: not a readable \.npz"):
        read_checkpoint(weights)
    with pytest.raises(ValueError, match=r"weights\.npz: not a readable \.npz weights"):
        load_weights_npz(weights)

    features = tmp_path / "features.npz"
    query = np.zeros((2, 4), np.float32)
    _hostile_npz(features, marker, query_features=query, gallery_features=query)
    with pytest.raises(DatasetFormatError, match=r"features\.npz"):
        load_features(str(features))

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(
        json.dumps({"format_version": SUPPORTED_VERSIONS[-1], "encoders": {}})
    )
    _hostile_npz(bundle / PARAMS_FILE, marker, **{"params/w": np.zeros(3, np.float32)})
    with pytest.raises(BundleError, match=r"params\.npz: not a readable parameters file"):
        load_bundle(bundle)
    assert not marker.exists()


def test_import_weights_reports_a_hostile_file_in_one_line(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _WritesMarker(marker)}, path)
    argv = ["import-weights", "--kind", "torchvision_resnet", "--input", str(path)]
    argv += ["--config", "configs/ssan.py:smoke", "--workdir", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evil.pth: refused" in err and "Traceback" not in err
    assert not marker.exists()
