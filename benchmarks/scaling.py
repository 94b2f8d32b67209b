"""Weak scaling of the SSAN and AlignedReID train steps on fake CPU devices and on processes.

The per-device batch is fixed (`--per_device_batch`); the global batch grows with the device
count. Each measurement runs in its own process (the device count is fixed when JAX starts):
  * 1 process with N = 1, 2, 4, 8 CPU devices (`--xla_force_host_platform_device_count=N`);
  * 2 processes x 1 device, joined by `jax.distributed` on 127.0.0.1 (gloo collectives, as
    `launch/multihost.sh` runs several hosts), against 1 process x 2 devices.
The step is the loop's (`run_setup.make_train_step`: state replicated, batch split on 'data',
gradients all-reduced) through `ssan_train_step.measure` / `alignedreid_train_step.measure`, at
the embedded smoke sizes (`configs/ssan.py:smoke`: ResNet-18 at width 0.125, 64 x 32 images,
BiLSTM 64, T = 16; `configs/alignedreid.py:smoke`: ResNet-18 at width 0.125, 64 x 32, P x K
with K = 4), so the RNN compiles in seconds even on 8 devices. s/step = median of `--steps`
timed steps after one warm-up step (process 0's clock).

Ratio = s/step(N) / s/step(1 device). On real accelerators, ideal weak scaling is 1.0. Fake CPU
devices share the host's cores, so N devices do N times the work on the same cores: on a 2-core
host the ratio cannot fall below about N/2 (from 2 devices on), and is nearer N where one device
already keeps both cores busy. The figures therefore measure what sharding, the all-reduce and
the process boundary add, not a speed-up.

Usage (from the repository root):
  .venv/bin/python -m benchmarks.scaling
  .venv/bin/python -m benchmarks.scaling --models=ssan --devices=1,2 --out=/tmp/scaling.json
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
CONFIG_ARGS = {"ssan": "smoke", "alignedreid": "smoke"}
NUM_CLASSES = 64  # ID classes of both models (the step's cost hardly depends on it)


def define_flags() -> None:
    """The command-line flags."""
    flags.DEFINE_list("models", list(CONFIG_ARGS), "Models to measure.")
    flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Fake CPU device counts (1 process).")
    flags.DEFINE_bool("processes", True, "Also 2 processes x 1 device.")
    flags.DEFINE_integer("per_device_batch", 8, "Batch per device (AlignedReID: a multiple of 4).")
    flags.DEFINE_integer("steps", 5, "Timed steps after the warm-up step.")
    flags.DEFINE_integer("timeout_s", 900, "Most seconds per measurement.")
    flags.DEFINE_string("out", "", "Also write the results as JSON here.")
    # Internal: a child process measuring one setup.
    flags.DEFINE_string("child_model", "", "Internal: measure this model.")
    flags.DEFINE_string("coordinator", "", "Internal: jax.distributed coordinator address.")
    flags.DEFINE_integer("num_processes", 1, "Internal: processes of the run.")
    flags.DEFINE_integer("process_id", 0, "Internal: this process.")


def run_child(args) -> None:
    """Measures one model's step on this process's devices; process 0 prints a JSON line."""
    import jax

    if args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    from benchmarks import alignedreid_train_step, ssan_train_step

    module = ssan_train_step if args.child_model == "ssan" else alignedreid_train_step
    batch = args.per_device_batch * jax.device_count()
    config = module.load_config(CONFIG_ARGS[args.child_model], batch_size=batch)
    result = module.measure(
        config, num_classes=NUM_CLASSES, steps=args.steps, label=CONFIG_ARGS[args.child_model]
    )
    if jax.process_index() == 0:
        result.update(processes=jax.process_count(), devices=jax.device_count())
        print(json.dumps(result), flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_setup(model: str, devices: int, processes: int, args) -> dict:
    """s/step of `model` with `processes` processes of `devices` CPU devices each.

    Returns:
      Process 0's result dict plus 'load_average' (1 minute, before and after), or
      {'error': ...} if a process failed or timed out.
    """
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    command = [sys.executable, "-m", "benchmarks.scaling", f"--child_model={model}"]
    command += [f"--per_device_batch={args.per_device_batch}", f"--steps={args.steps}"]
    if processes > 1:
        command += [f"--coordinator=127.0.0.1:{_free_port()}", f"--num_processes={processes}"]
    load_before = os.getloadavg()[0]
    procs = [
        subprocess.Popen(
            command + ([f"--process_id={index}"] if processes > 1 else []),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(processes)
    ]
    try:
        outputs = [proc.communicate(timeout=args.timeout_s) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
            proc.communicate()
        return {"error": f"timed out after {args.timeout_s} s"}
    if any(proc.returncode for proc in procs):
        tails = " / ".join(err[-800:] for _, err in outputs)
        return {"error": f"exit codes {[p.returncode for p in procs]}: {tails}"}
    line = [x for x in outputs[0][0].splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def table(rows: list[dict]) -> str:
    """Markdown table of the runs with the weak-scaling ratio against 1 process x 1 device.

    'floor' = max(1, N / cores), the ratio CPU-bound work cannot beat when one device keeps
    one core busy; 'all-reduces' counts the collective ops of the compiled step (one round trip
    each).
    """
    cores = os.cpu_count() or 1
    lines = [
        "| model | processes x devices | global batch | compile (s) | s/step | ratio to 1 x 1 "
        f"| floor on {cores} cores | all-reduces per step | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["model"]: r for r in rows if r["processes"] * r["devices_each"] == 1}
    for r in rows:
        setup = f"{r['processes']} x {r['devices_each']}"
        if "error" in r:
            lines.append(f"| {r['model']} | {setup} | error: {r['error'][:120]} |||||||")
            continue
        total = r["processes"] * r["devices_each"]
        reference = base.get(r["model"], {}).get("seconds_per_step")
        ratio = f"{r['seconds_per_step'] / reference:.2f}" if reference else "-"
        load = " -> ".join(f"{x:.1f}" for x in r["load_average"])
        lines.append(
            f"| {r['model']} | {setup} | {r['batch']} | {r['compile_seconds']:.1f} "
            f"| {r['seconds_per_step']:.3f} | {ratio} | {max(1.0, total / cores):.1f} "
            f"| {r['all_reduce_ops']} | {load} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    args = flags.FLAGS
    if args.child_model:
        run_child(args)
        return
    setups = [(int(n), 1) for n in args.devices] + ([(1, 2)] if args.processes else [])
    rows = []
    for model in args.models:
        for devices, processes in setups:
            start = time.perf_counter()
            result = measure_setup(model, devices, processes, args)
            result.update(model=model, processes=processes, devices_each=devices)
            rows.append(result)
            print(
                f"{model}, {processes} x {devices}: {result.get('seconds_per_step', 'error')} "
                f"s/step ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(table(rows))
    print(f"\n{os.cpu_count()} CPU cores; per-device batch {args.per_device_batch}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
