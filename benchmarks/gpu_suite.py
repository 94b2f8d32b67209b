"""The GPU suite: every speed figure of one accelerator in one command, one JSON and one table.

Items (issue 13):
  * the full-size SSAN, AlignedReID and APTM train steps (`ssan_train_step`,
    `alignedreid_train_step`, `aptm_train_step`: the loop's jitted step, paper sizes and
    batches) in bfloat16 and float32: compile s, s/step, images/s, TFLOP/step, MFU against the
    device's dense peak (`step_timing.PEAK_FLOPS`), XLA's buffer plan and the device's peak
    memory;
  * evaluation throughput (`eval_throughput`): images/s of each model's eval image encoder and
    captions/s of its text encoder, at full size and the configs' eval batches, float32;
  * k-reciprocal re-ranking at Market-1501 size, 3,368 x 15,913 (`reranking`).

Time: the whole run stays under `--budget_s` (default 450 s, under 8 minutes with start-up).
Each group of items (one model's; re-ranking) runs in its own process, started only while at
least `MIN_START_S` of the budget is left and stopped at the group's cap (`Group.cap_s`) or
the end of the budget, whichever comes first; that child writes every item as soon as it is
measured, so a stopped group keeps what it finished. An item that fails (out of memory, an
error, a stopped process) gets an 'error' string instead of numbers and the suite goes on.
Train steps and encoders time at most `--steps` calls or `--step_budget_s` seconds after one
warm-up call. Items run cheapest first: re-ranking, AlignedReID, SSAN, APTM; within a model
bfloat16 first, then the encoders, then float32. The parent process never starts a JAX
backend (a GPU's memory goes to one process at a time).

`--tiny`: the same code paths at smoke sizes (each config's 'smoke' variant, 1 timed call,
re-ranking at 40 x 200) for a CPU check; XLA's backend optimisation is turned down
(`--xla_backend_optimization_level=0`: compile time dominates) and `--jobs=2` runs two groups
side by side, costliest first, so tiny timings mean nothing. The test suite runs it
(tests/benchmarks/test_gpu_suite.py).

Usage (from the repository root):
  python -m benchmarks.gpu_suite --out benchmarks/gpu_suite.json     # one GPU, < 8 minutes
  python -m benchmarks.gpu_suite --tiny --jobs=2 --out /tmp/gpu_suite_tiny.json
  python -m benchmarks.gpu_suite --groups=aptm --budget_s=300 --out /tmp/aptm.json
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
DTYPES = ("bfloat16", "float32")
MIN_START_S = 20.0  # a group is not started with less of the budget left
TINY_XLA_FLAG = "--xla_backend_optimization_level=0"


@dataclasses.dataclass(frozen=True)
class Group:
    """Items measured in one process.

    Attributes:
      name: the group ('ssan', ...).
      items: its item names, in the order they run.
      cap_s: most seconds the group's process may take in the full mode.
    """

    name: str
    items: tuple[str, ...]
    cap_s: float


def _model_items(model: str, encoders: tuple[str, ...]) -> tuple[str, ...]:
    return (
        f"{model}_train_bfloat16",
        *(f"{model}_eval_{kind}" for kind in encoders),
        f"{model}_train_float32",
    )


GROUPS = (
    Group("reranking", ("reranking_market1501",), 60.0),
    Group("alignedreid", _model_items("alignedreid", ("image",)), 110.0),
    Group("ssan", _model_items("ssan", ("image", "text")), 150.0),
    Group("aptm", _model_items("aptm", ("image", "text")), 240.0),
)
ITEMS = tuple(item for group in GROUPS for item in group.items)

# Config arguments and ID classes of the full and the tiny mode.
CONFIG_ARGS = {
    False: {"ssan": "cuhk_pedes", "alignedreid": "market1501", "aptm": "cuhk_pedes"},
    True: {
        "ssan": "cuhk_pedes,smoke",
        "alignedreid": "market1501,smoke",
        "aptm": "cuhk_pedes,smoke",
    },
}
NUM_CLASSES = {False: {"ssan": 11000, "alignedreid": 751}, True: {"ssan": 16, "alignedreid": 16}}
RERANK_SIZES = {False: (3368, 15913), True: (40, 200)}  # Market-1501 query x gallery


def define_flags() -> None:
    """The command-line flags."""
    flags.DEFINE_string("out", str(REPO / "benchmarks" / "gpu_suite.json"), "The JSON written.")
    flags.DEFINE_bool("tiny", False, "Smoke sizes, 1 timed call (a CPU check of the code).")
    flags.DEFINE_float("budget_s", 450.0, "Wall-clock budget of the whole suite.")
    flags.DEFINE_list("groups", [g.name for g in GROUPS], "Groups to run (others: 'not run').")
    flags.DEFINE_integer("steps", 10, "Most timed calls per train step / encoder (tiny: 1).")
    flags.DEFINE_float("step_budget_s", 10.0, "Stop timing an item after this many seconds.")
    flags.DEFINE_integer("rerank_repeats", 3, "Most warm re-ranking runs.")
    flags.DEFINE_integer("jobs", 1, "Groups side by side (only with --tiny: a CPU check).")
    # Internal: a child process measuring one group.
    flags.DEFINE_string("child_group", "", "Internal: measure this group only.")
    flags.DEFINE_string("child_out", "", "Internal: the child's JSON of finished items.")


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes JSON to a temporary name, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temporary, path)


# --- child: one group in one process -------------------------------------------------------


def _recorder(out_path: str) -> Callable[[str, Callable[[], dict]], None]:
    """record(item, measure): runs `measure`, keeps its dict or the error, writes all so far."""
    results: dict[str, dict] = {}

    def record(item: str, measure: Callable[[], dict]) -> None:
        start = time.perf_counter()
        try:
            result = dict(measure())
        except Exception as error:  # out of memory, compile failures: recorded, suite goes on
            result = {"error": f"{type(error).__name__}: {error}"[:2000]}
        result["item_seconds"] = round(time.perf_counter() - start, 1)
        results[item] = result
        write_json(out_path, results)
        print(
            f"{item}: {result.get('error', 'done')} ({result['item_seconds']} s)", file=sys.stderr
        )

    return record


def _train_measures(model: str, tiny: bool, args: Any):
    """(mesh, init shared by every item, {dtype: config}, {dtype: () -> train-step result})."""
    from benchmarks import alignedreid_train_step, aptm_train_step, ssan_train_step
    from reid_jax import sharding

    arg = CONFIG_ARGS[tiny][model]
    steps, budget = (1 if tiny else args.steps), args.step_budget_s
    if model == "aptm":
        variant = arg.split(",")[0]
        loaded = {dtype: aptm_train_step.load_config(arg, 0, dtype=dtype) for dtype in DTYPES}
        configs = {dtype: config for dtype, (config, _) in loaded.items()}
        mesh = sharding.make_mesh(configs["float32"].mesh)
        init = aptm_train_step.make_init(configs["float32"], variant, mesh)
        measures = {
            dtype: lambda dtype=dtype: aptm_train_step.measure(
                configs[dtype],
                variant,
                steps=steps,
                budget_s=budget,
                group_note=loaded[dtype][1],
                init=init,
                label=arg,
            )
            for dtype in DTYPES
        }
        return mesh, init, configs, measures
    module = ssan_train_step if model == "ssan" else alignedreid_train_step
    classes = NUM_CLASSES[tiny][model]
    configs = {dtype: module.load_config(arg, dtype=dtype) for dtype in DTYPES}
    mesh = sharding.make_mesh(configs["float32"].mesh)
    init = module.make_init(configs["float32"], classes, mesh)
    measures = {
        dtype: lambda dtype=dtype: module.measure(
            configs[dtype], num_classes=classes, steps=steps, budget_s=budget, label=arg, init=init
        )
        for dtype in DTYPES
    }
    return mesh, init, configs, measures


def _measure_model(model: str, tiny: bool, args: Any, record: Callable) -> None:
    """The train steps (bfloat16, float32) and eval encoders (float32) of one model, in the
    group's order. One init serves them all: the variables do not depend on the compute dtype,
    and its compilation is counted in the first item's 'init_seconds' only."""
    import jax

    from benchmarks import eval_throughput
    from reid_jax.training.state import model_variables

    arg = CONFIG_ARGS[tiny][model]
    mesh, init, configs, train_measures = _train_measures(model, tiny, args)
    eval_model = None
    for item in next(g.items for g in GROUPS if g.name == model):
        kind = item.split("_")[-1]
        if "_train_" in item:
            record(item, train_measures[kind])
            continue
        if eval_model is None:
            eval_model = eval_throughput.load_model(
                model, arg, "float32", NUM_CLASSES[tiny].get(model, 0)
            )[1]

        def encoder(kind=kind, eval_model=eval_model):
            variables = model_variables(init(jax.random.key(0)))
            return eval_throughput.measure(
                model,
                eval_model,
                configs["float32"],
                variables,
                mesh,
                kind,
                repeats=1 if tiny else args.steps,
                budget_s=args.step_budget_s,
                label=arg,
            )

        record(item, encoder)


def run_child(group: str, tiny: bool, args: Any) -> None:
    """Measures one group's items, writing `args.child_out` after each."""
    record = _recorder(args.child_out)
    if group == "reranking":
        from benchmarks import reranking

        num_q, num_g = RERANK_SIZES[tiny]
        repeats = 1 if tiny else args.rerank_repeats

        def rerank():
            result = reranking.measure(num_q, num_g, repeats=repeats, budget_s=args.step_budget_s)
            import jax  # after the run: the figure is host NumPy + JAX on the default device

            return {"device": f"{jax.devices()[0].device_kind} + host NumPy", **result}

        record("reranking_market1501", rerank)
    else:
        _measure_model(group, tiny, args, record)


# --- parent: groups in processes, the JSON, the table --------------------------------------


def _child_env(tiny: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    if tiny and TINY_XLA_FLAG.split("=")[0] not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {TINY_XLA_FLAG}".strip()
    return env


@dataclasses.dataclass
class RunningGroup:
    """A group's child process."""

    group: Group
    proc: subprocess.Popen
    started: float
    deadline: float
    out: Path
    log: Path


def start_group(group: Group, seconds: float, args: Any, log_dir: Path) -> RunningGroup:
    """Starts one group's child process, to be stopped after `seconds`."""
    out, log = log_dir / f"{group.name}.json", log_dir / f"{group.name}.log"
    command = [sys.executable, "-m", "benchmarks.gpu_suite", f"--child_group={group.name}"]
    command += [f"--child_out={out}", f"--steps={args.steps}"]
    command += [f"--step_budget_s={args.step_budget_s}", f"--rerank_repeats={args.rerank_repeats}"]
    command += ["--tiny"] if args.tiny else []
    with open(log, "w") as log_file:
        # Own session: a stopped group is killed with everything it started.
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=_child_env(args.tiny),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    now = time.perf_counter()
    return RunningGroup(group, proc, now, now + seconds, out, log)


def collect_group(run: RunningGroup) -> dict[str, dict] | None:
    """The group's results once its process ended (it is killed past its deadline); None while
    it runs. Items it did not finish get an 'error' saying why."""
    code = run.proc.poll()
    now = time.perf_counter()
    if code is None and now < run.deadline:
        return None
    if code is None:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
    elapsed = now - run.started
    results = json.loads(run.out.read_text()) if run.out.exists() else {}
    if code is None:
        why = f"not finished: the group's process was stopped after {elapsed:.0f} s (time budget)"
    else:
        tail = run.log.read_text()[-1500:]
        why = f"not finished: the group's process exited with code {code}; log tail:\n{tail}"
    for item in run.group.items:
        results.setdefault(item, {"error": why})
    print(f"group {run.group.name}: {elapsed:.0f} s, exit code {code}", file=sys.stderr)
    return results


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_suite(args: Any) -> dict:
    """Runs the selected groups within the budget and returns the suite's JSON object."""
    unknown = set(args.groups) - {g.name for g in GROUPS}
    if unknown:
        raise app.UsageError(f"--groups: unknown {sorted(unknown)}; choose from {ITEMS}")
    if args.jobs > 1 and not args.tiny:
        raise app.UsageError("--jobs > 1 only with --tiny (groups would share the device)")
    start = time.perf_counter()
    suite = {
        "suite": "benchmarks/gpu_suite.py",
        "command": "python -m benchmarks.gpu_suite " + shlex.join(sys.argv[1:]),
        "tiny": args.tiny,
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax_version": importlib.metadata.version("jax"),
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "load_average_start": _load(),
        "budget_s": args.budget_s,
        "jobs": args.jobs,
        "xla_flags": _child_env(args.tiny).get("XLA_FLAGS", ""),
        "mfu_basis": "tflop_per_step / seconds_per_step / devices over the dense peak of "
        "step_timing.PEAK_FLOPS (vendor datasheet dense figures; float32 against TF32)",
        "items": {},
    }
    results: dict[str, dict] = {}
    for group in GROUPS:
        if group.name not in args.groups:
            results.update(
                {i: {"error": "not run: group not selected (--groups)"} for i in group.items}
            )
    # Side by side, the costliest group starts first, so the others fill the other slot.
    pending = [g for g in GROUPS if g.name in args.groups][:: -1 if args.jobs > 1 else 1]
    running: list[RunningGroup] = []
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as log_dir:
        while pending or running:
            while pending and len(running) < args.jobs:
                group = pending.pop(0)
                left = args.budget_s - (time.perf_counter() - start)
                if left < MIN_START_S:
                    why = f"not run: {left:.0f} s of the {args.budget_s:.0f} s budget left"
                    results.update({item: {"error": why} for item in group.items})
                    continue
                cap = left if args.tiny else min(group.cap_s, left)
                running.append(start_group(group, cap, args, Path(log_dir)))
            time.sleep(0.2)
            for run in list(running):
                finished = collect_group(run)
                if finished is not None:
                    running.remove(run)
                    results.update(finished)
                    suite["items"] = {item: results[item] for item in ITEMS if item in results}
                    write_json(args.out, suite)  # what is measured so far survives a kill
    suite["items"] = {item: results[item] for item in ITEMS}
    # The device of a model item (re-ranking's names the host too).
    devices = [r["device"] for name, r in suite["items"].items() if "device" in r]
    suite["device"] = next(
        (d for d in devices if "NumPy" not in d), devices[0] if devices else None
    )
    suite["wall_seconds"] = round(time.perf_counter() - start, 1)
    suite["load_average_end"] = _load()
    write_json(args.out, suite)
    return suite


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def markdown(suite: dict) -> str:
    """The suite's tables for benchmarks/RESULTS.md."""
    items = suite["items"]
    lines = [
        f"Command: `{suite['command']}`",
        f"Device: {suite['device']}; JAX {suite['jax_version']}; {suite['host_cpus']} host CPUs; "
        f"load average {suite['load_average_start'][0]} -> {suite['load_average_end'][0]}; "
        f"{suite['wall_seconds']:.0f} s in all" + (" (tiny mode)" if suite["tiny"] else ""),
        "",
        "| train step | dtype | batch | compile (s) | s/step | images/s | TFLOP/step | MFU % "
        "| XLA temp + args (GiB) | device peak (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in items.items():
        if "_train_" not in name:
            continue
        model, dtype = name.split("_train_")
        if "error" in r:
            lines.append(f"| {model} | {dtype} | error: {_one_line(r['error'])} ||||||||")
            continue
        memory = r["temp_memory_gib"] + r["argument_memory_gib"]
        lines.append(
            f"| {model} ({r['config']}) | {dtype} | {r['batch']} | {r['compile_seconds']:.1f} "
            f"| {r['seconds_per_step']:.3f} | {r['images_per_second']:.1f} "
            f"| {r['tflop_per_step']:.4g} | {_number(r['mfu_percent'], 1)} | {memory:.2f} "
            f"| {_number(r['device_peak_memory_gib'], 2)} |"
        )
    lines += [
        "",
        "| eval encoder | dtype | batch | compile (s) | s/batch | per second |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in items.items():
        if "_eval_" not in name:
            continue
        if "error" in r:
            lines.append(f"| {name} | - | error: {_one_line(r['error'])} ||||")
            continue
        lines.append(
            f"| {r['encoder']} ({r['config']}) | {r['dtype']} | {r['batch']} "
            f"| {r['compile_seconds']:.1f} | {r['seconds_per_batch']:.4f} "
            f"| {r['per_second']:.1f} {r['unit']} |"
        )
    lines += ["", "| re-ranking | Q x G | first call (s) | warm (s) |", "|---|---|---|---|"]
    for name, r in items.items():
        if not name.startswith("reranking"):
            continue
        if "error" in r:
            lines.append(f"| k-reciprocal | error: {_one_line(r['error'])} |||")
            continue
        lines.append(
            f"| k-reciprocal (k1 20, k2 6) | {r['queries']:,} x {r['gallery']:,} "
            f"| {r['first_call_seconds']:.2f} | {r['warm_seconds']:.2f} |"
        )
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:160].replace("|", "/")


def main(argv):
    del argv
    args = flags.FLAGS
    if args.child_group:
        run_child(args.child_group, args.tiny, args)
        return
    suite = run_suite(args)
    print(markdown(suite))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    define_flags()
    app.run(main)
