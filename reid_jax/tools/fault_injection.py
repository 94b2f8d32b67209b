"""Fault injection: kills a smoke training job at random moments and checks every resume.

    python -m reid_jax.tools.fault_injection --kills 20 --workdir /tmp/faults

Runs the job once uninterrupted (DIR/reference), then again in DIR/faulted, killing it
`--kills` times with SIGKILL or SIGTERM (seeded plan) and re-running the same command after each
kill, until a last launch completes. Kill moments: 'checkpoint' (the instant orbax's temporary
folder of a save appears, i.e. during the write), 'step' (a random time after some new steps
were logged) and 'startup' (a random time after the restore, during compilation). Checked:
  - after every kill, every checkpoint folder on disk restores (none corrupt or half-written);
  - every re-run resumes from the newest complete checkpoint (its log line names the step);
  - the final train state (every leaf, bit for bit) and every logged metric except images/s
    equal the uninterrupted run's.
Prints a summary, writes DIR/summary.json and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from absl import logging as absl_logging

import reid_jax
from reid_jax.tools import checkpoint_audit
from reid_jax.training import checkpoint
from reid_jax.training import logging as run_logging

REPO_ROOT = Path(reid_jax.__file__).resolve().parent.parent
DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "alignedreid.py") + ":smoke"
# The cheapest evaluation of the AlignedReID smoke run: it runs once per completed launch.
DEFAULT_SETTINGS = (
    "eval.distances=('global',)",
    "eval.rerank=False",
    "eval.save_features=False",
    "eval.rank_list_queries=0",
)
MOMENTS = ("checkpoint", "step", "startup")
# Every signal at every kind of moment comes first; the rest of the plan is drawn at random.
FIRST_KILLS = (
    ("SIGKILL", "checkpoint"),
    ("SIGTERM", "step"),
    ("SIGTERM", "checkpoint"),
    ("SIGKILL", "step"),
    ("SIGKILL", "startup"),
    ("SIGTERM", "startup"),
)
START_PATTERN = re.compile(r"(?:resumed from step (\d+) of \d+|(new run): \d+ steps)")
POLL_SECONDS = 0.002


@dataclasses.dataclass
class Kill:
    """One planned kill: the signal, the kind of moment, and which occurrence of it.

    `count` is the n-th new checkpoint write ('checkpoint') or the number of steps past the
    start that must show in metrics.jsonl ('step'); `delay` is added after it (seconds; for
    'startup', after the start line).
    """

    signal: str
    moment: str
    count: int
    delay: float


def plan_kills(kills: int, seed: int) -> list[Kill]:
    """The seeded kill plan: FIRST_KILLS, then random signals and moments."""
    rng = random.Random(seed)
    plan = []
    for index in range(kills):
        if index < len(FIRST_KILLS):
            name, moment = FIRST_KILLS[index]
        else:
            name = rng.choice(("SIGKILL", "SIGTERM"))
            moment = rng.choices(MOMENTS, weights=(2, 2, 1))[0]
        if moment == "checkpoint":
            # The first kill hits the first save: the re-run finds no complete checkpoint.
            plan.append(Kill(name, moment, 1 if index == 0 else rng.randint(1, 2), 0.0))
        elif moment == "step":
            plan.append(Kill(name, moment, rng.randint(1, 4), rng.uniform(0.0, 0.3)))
        else:
            plan.append(Kill(name, moment, 0, rng.uniform(0.0, 3.0)))
    return plan


class _Launch:
    """One `reid-jax train` process on a run folder, watched through the files it writes."""

    def __init__(self, command: list[str], workdir: Path, output: Path, env: dict[str, str]):
        self.workdir = workdir
        log = run_logging.process_log_path(workdir, 0)
        self._log_offset = log.stat().st_size if log.exists() else 0
        self._log = log
        self.checkpoint_dir = workdir / checkpoint.CHECKPOINT_DIR
        self.old_temporary = self.temporary_folders()
        self._seen_temporary: set[tuple[str, int]] = set()
        self.started = time.monotonic()
        self._output = open(output, "w")  # noqa: SIM115 (closed in wait)
        self.process = subprocess.Popen(
            command, stdout=self._output, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip

    def running(self) -> bool:
        return self.process.poll() is None

    def start_step(self) -> int | None:
        """The step this launch trains from, once its log says so (0: a new run)."""
        if not self._log.exists():
            return None
        with open(self._log) as f:
            f.seek(self._log_offset)
            match = START_PATTERN.search(f.read())
        if match is None:
            return None
        return 0 if match.group(2) else int(match.group(1))

    def temporary_folders(self) -> set[tuple[str, int]]:
        """(name, inode) of the temporary checkpoint folders now on disk."""
        found = set()
        try:
            with os.scandir(self.checkpoint_dir) as entries:
                for entry in entries:
                    if checkpoint_audit.TEMPORARY_MARK in entry.name:
                        try:
                            found.add((entry.name, entry.inode()))
                        except FileNotFoundError:  # renamed while listed
                            pass
        except FileNotFoundError:
            pass
        return found

    def checkpoint_writes_seen(self) -> int:
        """How many checkpoint writes of this launch were seen so far (call it often: a
        temporary folder lives only while its save runs)."""
        self._seen_temporary |= self.temporary_folders() - self.old_temporary
        return len(self._seen_temporary)

    def steps_logged_after(self, start: int) -> int:
        """How far past `start` the steps in metrics.jsonl reach (0 before the first line)."""
        path = self.workdir / run_logging.METRICS_FILE
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return 0
        # A line may be read half-written; its step, written first, is whole once "loss" is.
        steps = [
            int(line.split('"step": ')[1].split(",")[0]) for line in lines if '"train/loss"' in line
        ]
        return max([0, *(step - start for step in steps)])

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit (SIGKILL after `timeout`) and returns its code."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait()
        self._output.close()
        return code


def _wait_until(condition, launch: _Launch, timeout: float) -> bool:
    """Polls `condition()` until it holds (True) or the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not launch.running():
            return bool(condition())
        time.sleep(POLL_SECONDS)
    return False


def _inject(launch: _Launch, kill: Kill, start: int, timeout: float) -> dict[str, Any]:
    """Waits for the planned moment, sends the signal and reports what it hit."""
    if kill.moment == "checkpoint":
        reached = _wait_until(lambda: launch.checkpoint_writes_seen() >= kill.count,
                              launch, timeout)  # fmt: skip
    elif kill.moment == "step":
        reached = _wait_until(lambda: launch.steps_logged_after(start) >= kill.count,
                              launch, timeout)  # fmt: skip
    else:
        reached = True
    if kill.delay:
        time.sleep(kill.delay)
    # Only this launch's saves: a killed save's folder stays until its step is saved again.
    writing = sorted(name for name, _ in launch.temporary_folders() - launch.old_temporary)
    if not launch.running():
        return {"sent": False, "reached": reached, "exit_code": launch.wait(0)}
    os.killpg(launch.process.pid, getattr(signal, kill.signal))
    seconds = time.monotonic() - launch.started
    code = launch.wait(timeout)
    return {
        "sent": True,
        "reached": reached,
        "seconds_after_launch": round(seconds, 3),
        "temporary_folders_at_kill": writing,
        "exit_code": code,
    }


def _train_command(config: str, workdir: Path, overrides: list[str]) -> list[str]:
    flags = [f"--config.{setting}" for setting in overrides]
    return [sys.executable, "-m", "reid_jax.cli", "train", "--config", config,
            "--workdir", str(workdir), *flags]  # fmt: skip


def _child_env(env: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    # The launched processes import this copy of reid_jax, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_faults(
    directory: str | os.PathLike,
    *,
    kills: int,
    seed: int = 0,
    steps: int | None = None,
    checkpoint_every: int = 2,
    log_every: int = 1,
    config: str = DEFAULT_CONFIG,
    settings: tuple[str, ...] = DEFAULT_SETTINGS,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Runs the reference job and the killed job and compares them.

    Args:
      directory: harness folder (created; must not hold an earlier harness run's folders).
      kills: how many times the job is killed.
      seed: seed of the kill plan.
      steps: train.num_steps; default 4 * kills + 8 (a kill rarely costs more than 4 steps).
      checkpoint_every: checkpoint.every_steps.
      log_every: train.log_every_steps (1: every step's losses are compared; more: the
        interval means, with saves inside intervals).
      config: the --config argument.
      settings: extra `key=value` config overrides (without '--config.').
      env: environment of the launched processes (os.environ when None).
      timeout: seconds any one wait may take before the harness gives up on a launch.

    Returns:
      The summary (also written to directory/summary.json); 'passed' says whether every
      check held.
    """
    directory = Path(directory)
    for name in ("reference", "faulted"):
        if (directory / name).exists():  # a finished run folder would only be "resumed"
            raise FileExistsError(f"{directory / name} exists: give the harness a new folder")
    directory.mkdir(parents=True, exist_ok=True)
    steps = 4 * kills + 8 if steps is None else steps
    overrides = [f"train.num_steps={steps}", f"checkpoint.every_steps={checkpoint_every}",
                 f"train.log_every_steps={log_every}", *settings]  # fmt: skip
    env = _child_env(env)
    began = time.monotonic()

    reference_dir = directory / "reference"
    reference = _Launch(_train_command(config, reference_dir, overrides), reference_dir,
                        directory / "reference.out", env)  # fmt: skip
    reference_code = reference.wait(timeout)
    reference_seconds = time.monotonic() - reference.started

    faulted_dir = directory / "faulted"
    command = _train_command(config, faulted_dir, overrides)
    records, expected_start, failures = [], 0, []
    plan = plan_kills(kills, seed)
    for index in range(kills + 1):
        launch = _Launch(command, faulted_dir, directory / f"launch_{index:02d}.out", env)
        record: dict[str, Any] = {"launch": index, "expected_start": expected_start}
        started = _wait_until(lambda: launch.start_step() is not None, launch, timeout)  # noqa: B023
        record["start"] = launch.start_step() if started else None
        if index == kills:
            record["exit_code"] = launch.wait(timeout)
            records.append(record)
            break
        record["kill"] = dataclasses.asdict(plan[index])
        record.update(_inject(launch, plan[index], record["start"] or 0, timeout))
        audit = checkpoint_audit.audit_checkpoints(faulted_dir / checkpoint.CHECKPOINT_DIR)
        record["checkpoints"] = dataclasses.asdict(audit)
        expected_start = audit.latest or 0
        records.append(record)
        print(_describe(record), flush=True)
        if not record["sent"]:
            failures.append(f"launch {index} ended before its planned kill")
            break
    final = checkpoint_audit.audit_checkpoints(faulted_dir / checkpoint.CHECKPOINT_DIR)
    records[-1]["checkpoints"] = dataclasses.asdict(final)
    summary = _summarize(records, reference_dir, faulted_dir, steps, reference_code, failures)
    summary.update(
        kills_planned=kills, seed=seed, steps=steps, checkpoint_every=checkpoint_every,
        log_every=log_every,
        command=command, reference_seconds=round(reference_seconds, 1),
        total_seconds=round(time.monotonic() - began, 1), launches=records,
    )  # fmt: skip
    run_logging.write_json_atomic(directory / "summary.json", summary)
    return summary


def _describe(record: dict[str, Any]) -> str:
    kill = record["kill"]
    during = " during a checkpoint write" if record.get("temporary_folders_at_kill") else ""
    return (
        f"launch {record['launch']}: started at step {record['start']} "
        f"(expected {record['expected_start']}); {kill['signal']} at {kill['moment']} "
        f"{record.get('seconds_after_launch')} s{during} -> exit {record['exit_code']}, "
        f"complete checkpoints {record['checkpoints']['complete']}, "
        f"corrupt {len(record['checkpoints']['corrupt'])}"
    )


def _summarize(records, reference_dir, faulted_dir, steps, reference_code, failures) -> dict:
    """Counts kills, resumes and corrupt checkpoints and compares the two runs' results."""
    killed = [r for r in records if r.get("sent")]
    relaunches = records[1:]
    resumed = [r for r in relaunches if r["start"] == r["expected_start"]]
    # Audited after every kill and at the end; a folder seen corrupt by several audits
    # counts once.
    corrupt = len({name for r in [*killed, records[-1]] for name, _ in r["checkpoints"]["corrupt"]})
    last = records[-1]
    finished = "kill" not in last and last.get("exit_code") == 0
    failures = list(failures)
    if reference_code != 0:
        failures.append(f"the reference run exited with {reference_code}")
    if not finished:
        failures.append("the last launch did not complete")
    params_identical = losses_identical = False
    differing: list[str] = []
    record_diffs: list[dict] = []
    final = str(steps)
    if finished and reference_code == 0:
        ref_state = checkpoint_audit.read_state(reference_dir / checkpoint.CHECKPOINT_DIR / final)
        got_state = checkpoint_audit.read_state(faulted_dir / checkpoint.CHECKPOINT_DIR / final)
        differing = checkpoint_audit.differing_leaves(ref_state, got_state)
        params_identical = not differing
        record_diffs = checkpoint_audit.differing_records(
            checkpoint_audit.logged_records(reference_dir),
            checkpoint_audit.logged_records(faulted_dir),
        )
        losses_identical = not record_diffs
    if len(resumed) != len(relaunches):
        failures.append(f"{len(relaunches) - len(resumed)} re-runs did not resume correctly")
    if corrupt:
        failures.append(f"{corrupt} corrupt checkpoints")
    if finished and not params_identical:
        failures.append(f"final state differs in {len(differing)} leaves")
    if finished and not losses_identical:
        failures.append(f"{len(record_diffs)} logged records differ")
    by_signal = {
        name: sum(r["kill"]["signal"] == name for r in killed) for name in ("SIGKILL", "SIGTERM")
    }
    return {
        "passed": not failures,
        "failures": failures,
        "kills": len(killed),
        "kills_by_signal": by_signal,
        "kills_during_checkpoint_write": sum(bool(r["temporary_folders_at_kill"]) for r in killed),
        "sigterm_clean_exits": sum(
            r["kill"]["signal"] == "SIGTERM" and r["exit_code"] == 0 for r in killed
        ),
        "resumes": len(resumed),
        "relaunches": len(relaunches),
        "corrupt_checkpoints": corrupt,
        "final_state_bit_identical": params_identical,
        "differing_leaves": differing[:20],
        "logged_metrics_bit_identical": losses_identical,
        "differing_records": record_diffs[:5],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable lines printed at the end of a harness run."""
    yes_no = {True: "yes", False: "no"}
    by_signal = summary["kills_by_signal"]
    lines = [
        f"kills: {summary['kills']} (SIGKILL {by_signal['SIGKILL']}, SIGTERM "
        f"{by_signal['SIGTERM']}; {summary['kills_during_checkpoint_write']} during a "
        "checkpoint write)",
        f"SIGTERM: {summary['sigterm_clean_exits']} of {by_signal['SIGTERM']} exited with 0 "
        "(one before the loop installs its handler ends the process at once)",
        f"resumes: {summary['resumes']} of {summary['relaunches']}",
        f"corrupt checkpoints: {summary['corrupt_checkpoints']}",
        f"final state bit-identical: {yes_no[summary['final_state_bit_identical']]}",
        f"logged metrics bit-identical: {yes_no[summary['logged_metrics_bit_identical']]}",
        f"wall time: {summary['total_seconds']} s",
        "PASSED" if summary["passed"] else "FAILED: " + "; ".join(summary["failures"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="harness folder (reference/, faulted/)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: 4 * kills + 8")
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument(
        "--set",
        action="append",
        dest="settings",
        metavar="KEY=VALUE",
        help="config override (repeatable); default: a cheap AlignedReID eval",
    )
    args = parser.parse_args(argv)
    # orbax warns once per audited checkpoint that an item folder has no checkpoint metadata.
    absl_logging.set_verbosity(absl_logging.ERROR)
    summary = run_faults(
        args.workdir, kills=args.kills, seed=args.seed, steps=args.steps,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, config=args.config,
        settings=tuple(args.settings) if args.settings else DEFAULT_SETTINGS,
    )  # fmt: skip
    print(format_summary(summary), flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
