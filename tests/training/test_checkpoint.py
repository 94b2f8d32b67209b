"""Checkpoint folders under crashes: old steps leave by a rename (never half-deleted under
their step name) and the metrics of an unfinished log interval come back with their bits."""

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np

from reid_jax.tools import checkpoint_audit
from reid_jax.training import checkpoint


def _manager(workdir, max_to_keep=2):
    config = ml_collections.ConfigDict(dict(max_to_keep=max_to_keep, async_save=False))
    return checkpoint.make_checkpoint_manager(workdir, config)


def _save(manager, step, iterator, unlogged=None):
    state = {"w": jnp.full((4,), float(step)), "step": jnp.int32(step)}
    checkpoint.save_checkpoint(manager, step, state, iterator, unlogged)


def _killed_removal(path, ignore_errors=False):
    """Stands in for shutil.rmtree in a process killed halfway: some files go, then nothing."""
    del ignore_errors
    files = sorted(p for p in path.rglob("*") if p.is_file())
    for file in files[: len(files) // 2]:
        file.unlink()


def test_old_steps_are_never_half_deleted_under_their_step_name(tmp_path, monkeypatch):
    iterator = iter(grain.MapDataset.range(16).to_iter_dataset())
    monkeypatch.setattr(checkpoint.shutil, "rmtree", _killed_removal)
    manager = _manager(tmp_path)
    for step in (2, 4, 6):
        _save(manager, step, iterator)
    manager.close()
    folder = tmp_path / checkpoint.CHECKPOINT_DIR
    audit = checkpoint_audit.audit_checkpoints(folder)
    assert (audit.complete, audit.corrupt) == ([4, 6], [])
    assert [p.name for p in (folder / checkpoint.DELETING_DIR).iterdir()] == ["2"]  # debris
    monkeypatch.undo()
    manager = _manager(tmp_path)  # the next command clears the debris
    assert not (folder / checkpoint.DELETING_DIR).exists()
    assert manager.all_steps() == [4, 6]
    _save(manager, 8, iterator)
    # Step 4 went through .deleting, emptied right after the save (the folder stays while a
    # manager is open: an asynchronous save may still rename into it).
    assert list((folder / checkpoint.DELETING_DIR).iterdir()) == []
    manager.close()
    checkpoint.empty_deleted(folder, idle=True)
    assert sorted(p.name for p in folder.iterdir()) == ["6", "8"]


def test_unlogged_metrics_round_trip_with_their_dtypes(tmp_path):
    iterator = iter(grain.MapDataset.range(16).to_iter_dataset())
    unlogged = [
        {"loss": np.asarray(1.1, np.float32), "count": np.asarray(3, np.int32)},
        {"loss": np.asarray(np.float32(2) / 3, np.float32), "count": np.asarray(-1, np.int32)},
    ]
    manager = _manager(tmp_path, max_to_keep=3)
    _save(manager, 1, iterator, unlogged)
    _save(manager, 2, iterator, [])
    restored = checkpoint.restore_unlogged_metrics(manager, 1)
    assert checkpoint.restore_unlogged_metrics(manager, 2) == []
    manager.close()
    assert len(restored) == 2
    for want, got in zip(unlogged, restored, strict=True):
        assert sorted(got) == sorted(want)
        for name in want:
            assert got[name].dtype == want[name].dtype
            assert got[name].tobytes() == want[name].tobytes()
