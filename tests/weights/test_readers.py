"""Weights readers: every format and container, and files that would run code are refused."""

import os
import pickle
import sys

import numpy as np
import pytest
import torch

from reid_jax.weights import WeightsError, read_checkpoint


def _state():
    return {"conv.weight": torch.arange(6.0).reshape(2, 3), "bn.running_var": torch.ones(2)}


@pytest.mark.parametrize("zip_format", [True, False])
def test_pytorch_zip_and_legacy_files(tmp_path, zip_format):
    path = tmp_path / "model.pth"
    torch.save(_state(), path, _use_new_zipfile_serialization=zip_format)
    checkpoint = read_checkpoint(path)
    assert sorted(checkpoint.tensors) == ["bn.running_var", "conv.weight"]
    np.testing.assert_array_equal(checkpoint.tensors["conv.weight"], np.arange(6.0).reshape(2, 3))


def test_nested_containers_module_prefix_and_metadata(tmp_path):
    path = tmp_path / "best.pth.tar"
    network = {f"module.{k}": v for k, v in _state().items()}
    torch.save({"network": network, "WN": {"W.0.block.weight": torch.ones(3, 2)},
                "epoch": 7, "test_best": 0.5, "state_dicts": [{"a": torch.zeros(1)}]},
               path)  # fmt: skip
    checkpoint = read_checkpoint(path)
    assert sorted(checkpoint.tensors) == [
        "WN.W.0.block.weight",
        "network.bn.running_var",
        "network.conv.weight",
        "state_dicts.0.a",
    ]
    assert checkpoint.metadata == {"epoch": 7, "test_best": 0.5}
    assert sorted(checkpoint.sub("network.")) == ["bn.running_var", "conv.weight"]


@pytest.mark.parametrize("zip_format", [True, False])
def test_numpy_scores_beside_the_state_dict_are_metadata(tmp_path, zip_format):
    # SSAN's best.pth.tar stores test_best = cmc[0], a np.float64 (src/test_during_train.py).
    path = tmp_path / "best.pth.tar"
    torch.save({"network": _state(), "test_best": np.float64(0.625), "epoch": 3,
                "cmc": np.array([0.5, 0.75], np.float32), "count": np.int64(2)},
               path, _use_new_zipfile_serialization=zip_format)  # fmt: skip
    checkpoint = read_checkpoint(path)
    assert sorted(checkpoint.tensors) == ["network.bn.running_var", "network.conv.weight"]
    assert checkpoint.metadata == {"test_best": 0.625, "epoch": 3, "cmc": [0.5, 0.75], "count": 2}
    assert type(checkpoint.metadata["test_best"]) is float


def test_safetensors_and_npz(tmp_path):
    from safetensors.torch import save_file

    save_file(_state(), tmp_path / "model.safetensors")
    np.savez(
        tmp_path / "model.npz", **{k: v.numpy() for k, v in _state().items()}, step=np.int64(3)
    )
    for name in ("model.safetensors", "model.npz"):
        checkpoint = read_checkpoint(tmp_path / name)
        assert sorted(checkpoint.tensors) == ["bn.running_var", "conv.weight"], name
    assert read_checkpoint(tmp_path / "model.npz").metadata == {"step": 3}


class _Payload:
    """Unpickling this would call os.system: a weights file must never do that."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickled_callable_is_refused(tmp_path, zip_format):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path,
               _use_new_zipfile_serialization=zip_format)  # fmt: skip
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: .*posix\.system"):
        read_checkpoint(path)


# A plain pickle uses opcodes torch.save does not; torch warns before refusing it.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pth"
    with open(path, "wb") as f:
        pickle.dump({"payload": _Payload()}, f)
    with pytest.raises(WeightsError, match=r"plain\.pth: refused: the file holds more than"):
        read_checkpoint(path)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"weights.h5: unknown weights format '.h5'"):
        read_checkpoint(tmp_path / "weights.h5")
    (tmp_path / "broken.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="broken.pth"):
        read_checkpoint(tmp_path / "broken.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="empty.pth: holds no tensors"):
        read_checkpoint(tmp_path / "empty.pth")


def test_pytorch_files_without_torch_name_the_extra(tmp_path, monkeypatch):
    torch.save(_state(), tmp_path / "model.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(WeightsError, match=r"model\.pth: .*pip install 'reid_jax\[convert\]'"):
        read_checkpoint(tmp_path / "model.pth")
