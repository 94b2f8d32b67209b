"""Fault injection: the checkpoint audit on hand-made damage, the kill plan, and a short
harness run (3 kills of the AlignedReID smoke job, one SIGKILL in its first checkpoint write)."""

import os
import shutil

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from reid_jax.tools import checkpoint_audit, fault_injection
from reid_jax.training import checkpoint


def _save_steps(workdir, steps):
    config = ml_collections.ConfigDict(dict(max_to_keep=5, async_save=False))
    manager = checkpoint.make_checkpoint_manager(workdir, config)
    iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
    try:
        for step in steps:
            next(iterator)
            state = {"params": {"w": jnp.full((3, 2), float(step))}, "step": jnp.int32(step)}
            checkpoint.save_checkpoint(manager, step, state, iterator)
        manager.wait_until_finished()
    finally:
        manager.close()
    return workdir / checkpoint.CHECKPOINT_DIR


def test_audit_sorts_complete_temporary_and_corrupt_folders(tmp_path):
    folder = _save_steps(tmp_path, [2, 4, 6])
    audit = checkpoint_audit.audit_checkpoints(folder)
    assert (audit.complete, audit.temporary, audit.corrupt) == ([2, 4, 6], [], [])
    state = checkpoint_audit.read_state(folder / "4")
    np.testing.assert_array_equal(state["['params']['w']"], np.full((3, 2), 4.0, np.float32))
    # A save cut off before its rename, a step folder half deleted, one without its data.
    shutil.copytree(folder / "6", folder / "8.orbax-checkpoint-tmp")
    for path in (folder / "4" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.unlink()
    shutil.rmtree(folder / "6" / "data")
    audit = checkpoint_audit.audit_checkpoints(folder)
    assert audit.complete == [2] and audit.latest == 2
    assert audit.temporary == ["8.orbax-checkpoint-tmp"]
    assert [name for name, _ in audit.corrupt] == ["4", "6"]
    assert "iterator state" in audit.corrupt[1][1]


def test_differing_leaves_compares_bits():
    a = {"x": np.array([0.0, np.nan], np.float32), "y": np.zeros(2, np.float32)}
    assert checkpoint_audit.differing_leaves(a, {k: v.copy() for k, v in a.items()}) == []
    b = {"x": np.array([-0.0, np.nan], np.float32), "y": np.zeros(2, np.float64)}
    assert checkpoint_audit.differing_leaves(a, b) == ["x", "y"]
    assert checkpoint_audit.differing_leaves(a, {"x": a["x"]}) == ["y"]


def test_kill_plan_is_seeded_and_covers_every_signal_and_moment():
    plan = fault_injection.plan_kills(20, seed=3)
    assert plan == fault_injection.plan_kills(20, seed=3)
    assert plan != fault_injection.plan_kills(20, seed=4)
    assert (plan[0].signal, plan[0].moment, plan[0].count) == ("SIGKILL", "checkpoint", 1)
    pairs = {(kill.signal, kill.moment) for kill in plan}
    assert pairs == {(s, m) for s in ("SIGKILL", "SIGTERM") for m in fault_injection.MOMENTS}


@pytest.mark.slow  # four launches of a smoke job plus the uninterrupted one (~1-2 min)
def test_short_harness_run_resumes_bit_identically(tmp_path):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")  # one device: faster compiles
    summary = fault_injection.run_faults(tmp_path, kills=3, seed=0, env=env)
    assert summary["passed"], fault_injection.format_summary(summary)
    assert summary["kills"] == 3 and summary["resumes"] == 3
    assert summary["kills_by_signal"] == {"SIGKILL": 1, "SIGTERM": 2}
    assert summary["corrupt_checkpoints"] == 0
    assert summary["final_state_bit_identical"] and summary["logged_metrics_bit_identical"]
    first = summary["launches"][0]
    # Killed while writing its first checkpoint: nothing complete, the re-run starts anew.
    assert first["temporary_folders_at_kill"] and first["checkpoints"]["complete"] == []
    assert summary["launches"][1]["start"] == 0
    assert all(launch["start"] > 0 for launch in summary["launches"][2:])
    assert (tmp_path / "summary.json").is_file()
