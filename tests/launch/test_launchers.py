"""The launchers in launch/: what each one hands to every process, and how they end.

A stand-in interpreter (PYTHON=<fake python>, a bash script written here) records the
environment and arguments each process would give `python -m reid_jax.cli`, so the wiring of
every launcher is checked without a cluster: SLURM through stand-in `srun`/`scontrol`, TPU
pods through a stand-in `gcloud` that runs the workers' command line here, the JobSet
through its manifest's env. The local N-process launcher also runs the real CLI once, to
check that killing one process stops the run; the full two-process training through it is
tests/training/test_multiprocess.py.
"""

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from reid_jax import cli

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
TIMEOUT_S = 60

FAKE_PYTHON = """#!/usr/bin/env bash
# `-c` is the launcher asking for a free port: the real interpreter answers.
if [ "${1:-}" = -c ]; then exec REAL_PYTHON "$@"; fi
if [ -n "${FAKE_IGNORE_TERM:-}" ]; then
  trap 'echo "SIGTERM ignored"' TERM
else
  trap 'echo "SIGTERM: checkpoint saved"; exit 0' TERM
fi
# Recorded once the trap is set, so that a test may signal as soon as the record exists.
{
  env | grep -E '^(REID_JAX_[A-Z_]+|CUDA_VISIBLE_DEVICES|XLA_FLAGS)=' | sort
  printf 'arg=%s\\n' "$@"
} >"${FAKE_RECORDS}/process_${REID_JAX_PROCESS_ID:-auto}.txt"
echo "output of process ${REID_JAX_PROCESS_ID:-auto}"
code="FAKE_EXIT_${REID_JAX_PROCESS_ID:-auto}"
if [ -n "${!code:-}" ]; then
  sleep "${FAKE_EXIT_AFTER_S:-0}"
  exit "${!code}"
fi
end=$((SECONDS + ${FAKE_RUN_S:-0}))
while [ "${SECONDS}" -lt "${end}" ]; do
  sleep 1 &
  wait $! || true  # a signal's trap interrupts the wait (and SIGTERM the sleep)
done
"""


@pytest.fixture
def fake(tmp_path):
    """(environment for a launcher whose processes run the stand-in, records folder)."""
    records = tmp_path / "records"
    records.mkdir()
    python = tmp_path / "fake_python"
    python.write_text(FAKE_PYTHON.replace("REAL_PYTHON", sys.executable))
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REID_JAX_", "SLURM_"))}
    env.update(PYTHON=str(python), FAKE_RECORDS=str(records), JAX_PLATFORMS="cpu")
    for name in ("CUDA_VISIBLE_DEVICES", "XLA_FLAGS"):
        env.pop(name, None)
    return env, records


def _record(records: Path, name: str) -> tuple[dict[str, str], list[str]]:
    """(REID_JAX_*/CUDA/XLA environment, arguments) one stand-in process saw."""
    lines = (records / f"process_{name}.txt").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if not line.startswith("arg="))
    return env, [line[len("arg=") :] for line in lines if line.startswith("arg=")]


def _run(command: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs
    )


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _started_pids(launcher: subprocess.Popen, count: int) -> list[int]:
    """Reads the launcher's 'process i (pid P) writes to ...' lines from its stderr."""
    pids = []
    while len(pids) < count:
        line = launcher.stderr.readline()
        assert line, "the launcher ended before starting every process"
        if "writes to" in line:
            assert f"process {len(pids)} (pid " in line, line
            pids.append(int(line.split("(pid ")[1].split(")")[0]))
    return pids


TRAIN_ARGS = ["train", "--config", "configs/ssan.py:smoke", "--config.data.root=/x y"]


def test_every_launch_script_is_executable_bash():
    scripts = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
    assert {p.name for p in scripts} >= {
        "local.sh",
        "local_processes.sh",
        "multihost.sh",
        "slurm.sbatch",
        "tpu_pod.sh",
    }
    for script in scripts:
        assert os.access(script, os.X_OK), script
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, (script, checked.stderr)


def test_local_processes_gives_each_process_its_devices_and_output_file(fake, tmp_path):
    env, records = fake
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/d")
    workdir = tmp_path / "run"
    command = ["bash", "launch/local_processes.sh", "--cpu_devices=3", "2", *TRAIN_ARGS]
    done = _run([*command, "--workdir", str(workdir)], env)
    assert done.returncode == 0, done.stderr
    coordinators = set()
    for process_id in range(2):
        seen, args = _record(records, str(process_id))
        assert args == ["-m", "reid_jax.cli", *TRAIN_ARGS, "--workdir", str(workdir)]
        assert seen["REID_JAX_PROCESS_ID"] == str(process_id)
        assert seen["REID_JAX_NUM_PROCESSES"] == "2"
        # The device count is the launcher's; other XLA flags stay.
        assert seen["XLA_FLAGS"].split() == [
            "--xla_dump_to=/tmp/d",
            "--xla_force_host_platform_device_count=3",
        ]
        assert "CUDA_VISIBLE_DEVICES" not in seen
        coordinators.add(seen["REID_JAX_COORDINATOR"])
        out = (workdir / "logs" / f"process_{process_id}.out").read_text()
        assert out == f"output of process {process_id}\n"
    (coordinator,) = coordinators
    host, port = coordinator.split(":")
    assert host == "127.0.0.1" and 1024 <= int(port) < 65536
    # Process 0's output is shown, process 1's only in its file.
    assert done.stdout == "output of process 0\n"


def test_local_processes_splits_the_gpus(fake, tmp_path):
    env, records = fake
    del env["JAX_PLATFORMS"]
    env["CUDA_VISIBLE_DEVICES"] = "4,5,6,7"
    workdir = tmp_path / "run"
    done = _run(["bash", "launch/local_processes.sh", "2", "train", f"--workdir={workdir}"], env)
    assert done.returncode == 0, done.stderr
    assert _record(records, "0")[0]["CUDA_VISIBLE_DEVICES"] == "4,5"
    assert _record(records, "1")[0]["CUDA_VISIBLE_DEVICES"] == "6,7"

    env["CUDA_VISIBLE_DEVICES"] = "0,1,2"
    done = _run(["bash", "launch/local_processes.sh", "2", "train", f"--workdir={workdir}"], env)
    assert done.returncode == 2 and "3 GPUs (0 1 2) do not split evenly" in done.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["2", "train", "--config", "configs/ssan.py"], "--workdir is required"),
        (["two", "train", "--workdir", "w"], "usage:"),
        (["--cpu_devices=0", "2", "train", "--workdir", "w"], "usage:"),
    ],
)
def test_local_processes_refuses_bad_arguments(fake, arguments, message):
    env, records = fake
    done = _run(["bash", "launch/local_processes.sh", *arguments], env)
    assert done.returncode == 2 and message in done.stderr
    assert not list(records.iterdir())  # nothing started


def test_a_failing_process_stops_the_run_with_its_status(fake, tmp_path):
    env, records = fake
    env.update(FAKE_EXIT_1="3", FAKE_EXIT_AFTER_S="1", FAKE_RUN_S="600")
    workdir = tmp_path / "run"
    command = ["bash", "launch/local_processes.sh", "2", "train", "--workdir", str(workdir)]
    launcher = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = _started_pids(launcher, 2)
        _, stderr = launcher.communicate(timeout=TIMEOUT_S)
    finally:
        launcher.kill()
    assert launcher.returncode == 3
    assert "process 1 (pid" in stderr and "exited with status 3; killing the others" in stderr
    assert all(_gone(pid) for pid in pids)  # process 0 (due to run 600 s) was killed


def test_ctrl_c_asks_every_process_to_stop_and_a_second_one_kills(fake, tmp_path):
    env, records = fake
    env.update(FAKE_RUN_S="600")
    workdir = tmp_path / "run"
    command = ["bash", "launch/local_processes.sh", "2", "train", "--workdir", str(workdir)]
    for ignore_term in (False, True):
        env["FAKE_IGNORE_TERM"] = "1" if ignore_term else ""
        launcher = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As from a terminal: a shell cannot trap a signal it was started with ignored,
            # and a test run started in the background (e.g. `.ci/run &`) ignores SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            pids = _started_pids(launcher, 2)
            while len(list(records.iterdir())) < 2:
                time.sleep(0.05)  # both stand-ins have set their SIGTERM trap
            launcher.send_signal(signal.SIGINT)
            if ignore_term:
                time.sleep(1)
                assert not any(_gone(pid) for pid in pids)  # they ignore SIGTERM...
                launcher.send_signal(signal.SIGINT)  # ...so the second Ctrl-C kills them
            stdout, stderr = launcher.communicate(timeout=TIMEOUT_S)
        finally:
            launcher.kill()
        assert launcher.returncode == 130, stderr
        assert "asking every process to save a checkpoint and stop" in stderr
        assert all(_gone(pid) for pid in pids)
        for process_id in range(2):
            out = (workdir / "logs" / f"process_{process_id}.out").read_text()
            expected = "SIGTERM ignored" if ignore_term else "SIGTERM: checkpoint saved"
            assert expected in out
        for record in records.iterdir():
            record.unlink()


def test_killing_one_real_process_stops_the_other(tmp_path):
    """The real CLI, 2 processes x 2 CPU devices: SIGKILL process 1 once it has joined the
    run (its log file in the run folder exists); the launcher kills process 0 and exits 137."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REID_JAX_")}
    env.update(
        PYTHON=sys.executable,
        JAX_PLATFORMS="cpu",
        REID_JAX_DATA=str(tmp_path / "data"),
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
    )
    workdir = tmp_path / "run"
    command = ["bash", "launch/local_processes.sh", "--cpu_devices=2", "2"]
    command += ["train", "--config", "configs/ssan.py:smoke", "--workdir", str(workdir)]
    command += ["--config.train.num_steps=100000"]  # process 0 would run for hours
    launcher = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = _started_pids(launcher, 2)
        log = workdir / "logs" / "process_1.log"
        deadline = time.monotonic() + TIMEOUT_S
        while not log.exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.exists(), launcher.stderr.read() if launcher.poll() is not None else "timeout"
        os.kill(pids[1], signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=TIMEOUT_S)
    finally:
        launcher.kill()
    assert launcher.returncode == 137, stderr
    assert f"process 1 (pid {pids[1]}) exited with status 137; killing the others" in stderr
    assert _gone(pids[0])
    # Each process logged into the run folder where it ran, with its 2 CPU devices.
    for process_id in range(2):
        first = (workdir / "logs" / f"process_{process_id}.log").read_text().splitlines()[0]
        assert f"] process {process_id} of 2 on " in first and first.count("cpu:") == 2


def _stand_in(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("#!/usr/bin/env bash\n" + body)
    (folder / name).chmod(0o755)


def test_slurm_template_starts_one_process_per_task(fake, tmp_path):
    env, records = fake
    tools = tmp_path / "bin"
    # srun: every task runs the command with its SLURM_PROCID; its own options are recorded.
    _stand_in(
        tools,
        "srun",
        'echo "$@" >"${FAKE_RECORDS}/srun.txt"\n'
        'while [ "${1#--}" != "$1" ]; do shift; done\n'
        'for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" || exit; done\n',
    )
    _stand_in(
        tools, "scontrol", '[ "$*" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n'
    )
    env.update(
        PATH=f"{tools}:{env['PATH']}",
        SLURM_NTASKS="2",
        SLURM_JOB_NODELIST="gpu[07-08]",
        SLURM_JOB_ID="123456",
        SLURM_SUBMIT_DIR=str(REPO),
    )
    done = _run(["bash", "launch/slurm.sbatch", *TRAIN_ARGS, "--workdir", "/shared/r"], env)
    assert done.returncode == 0, done.stderr
    assert (records / "srun.txt").read_text().split()[0] == "--kill-on-bad-exit=1"
    for process_id in range(2):
        seen, args = _record(records, str(process_id))
        assert args == ["-m", "reid_jax.cli", *TRAIN_ARGS, "--workdir", "/shared/r"]
        assert seen["REID_JAX_PROCESS_ID"] == str(process_id)
        assert seen["REID_JAX_NUM_PROCESSES"] == "2"
        assert seen["REID_JAX_COORDINATOR"] == f"gpu07:{20000 + 123456 % 20000}"
        assert seen["REID_JAX_DISTRIBUTED"] == "1"
    sbatch_options = [
        line.split()[1]
        for line in (LAUNCH / "slurm.sbatch").read_text().splitlines()
        if line.startswith("#SBATCH")
    ]
    assert "--ntasks-per-node=1" in sbatch_options
    assert any(option.startswith("--gpus-per-node=") for option in sbatch_options)


def test_tpu_pod_runs_the_same_command_on_every_worker(fake, tmp_path):
    env, records = fake
    tools = tmp_path / "bin"
    # gcloud: records its arguments; `ssh ... --command=C` runs C here, as one worker would.
    _stand_in(
        tools,
        "gcloud",
        'printf "%s\\n" "$@" >>"${FAKE_RECORDS}/gcloud.txt"\n'
        'echo ---- >>"${FAKE_RECORDS}/gcloud.txt"\n'
        'for arg in "$@"; do\n'
        '  case "$arg" in *.tar.gz) cp "$arg" "${FAKE_RECORDS}/archive.tar.gz" ;; esac\n'
        "done\n"
        'if [ "$4" = ssh ] && [ -z "${FAKE_NO_RUN:-}" ]; then\n'
        '  for arg in "$@"; do\n'
        '    case "$arg" in --command=*) exec bash -c "${arg#--command=}" ;; esac\n'
        "  done\n"
        "fi\n",
    )
    env.update(GCLOUD=str(tools / "gcloud"))
    where = ["--tpu=pod-32", "--zone=us-central2-b", "--project=p1"]
    quoted = "--config.data.train_files=('/a b/it''s',)"
    command = ["bash", "launch/tpu_pod.sh", *where, f"--repo={REPO}", f"--python={env['PYTHON']}"]
    done = _run([*command, *TRAIN_ARGS, quoted, "--workdir", "/mnt/r"], env)
    assert done.returncode == 0, done.stderr
    seen, args = _record(records, "auto")
    assert args == ["-m", "reid_jax.cli", *TRAIN_ARGS, quoted, "--workdir", "/mnt/r"]
    # No coordinator, count or id: jax.distributed.initialize() reads them on TPU VMs.
    assert seen == {"REID_JAX_DISTRIBUTED": "1", "REID_JAX_DATA": seen["REID_JAX_DATA"]}
    calls = (records / "gcloud.txt").read_text().split("----\n")[:-1]
    assert calls[0].splitlines()[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod-32"]
    for option in ("--zone=us-central2-b", "--project=p1", "--worker=all"):
        assert option in calls[0].splitlines()

    (records / "gcloud.txt").unlink()
    env["FAKE_NO_RUN"] = "1"
    done = _run(["bash", "launch/tpu_pod.sh", *where, "install"], env)
    assert done.returncode == 0, done.stderr
    scp, ssh = (records / "gcloud.txt").read_text().split("----\n")[:-1]
    assert scp.splitlines()[3] == "scp" and "pod-32:reid_jax.tar.gz" in scp.splitlines()
    assert "--worker=all" in scp.splitlines() and "--worker=all" in ssh.splitlines()
    assert "tar -xzf ~/reid_jax.tar.gz -C ~/reid_jax" in ssh
    assert ".venv/bin/pip install -q -e . 'jax[tpu]'" in ssh
    with tarfile.open(records / "archive.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"pyproject.toml", "launch/multihost.sh", "configs/ssan.py"} <= names


def _jobset_container(manifest: dict) -> tuple[dict, dict, dict]:
    (replicated,) = manifest["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    return replicated, job, container


def test_jobset_manifest_wires_every_pod_to_process_0(fake, monkeypatch):
    env, records = fake
    manifest = yaml.safe_load((LAUNCH / "jobset.yaml").read_text())
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert manifest["kind"] == "JobSet"
    assert manifest["spec"]["network"]["enableDNSHostnames"] is True
    replicated, job, container = _jobset_container(manifest)
    assert replicated["replicas"] == 1
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] >= 2
    variables = {v["name"]: v for v in container["env"]}
    index = variables["REID_JAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # Pod 0 of job 0 is <jobset>-<replicated job>-0-0 in the subdomain <jobset>.
    name = manifest["metadata"]["name"]
    host, port = variables["REID_JAX_COORDINATOR"]["value"].split(":")
    assert host == f"{name}-{replicated['name']}-0-0.{name}"
    assert int(port) in [p["containerPort"] for p in container["ports"]]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    # The run folder is on a volume every pod mounts.
    args = container["args"]
    workdir = args[args.index("--workdir") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (runs,) = [name for path, name in mounts.items() if workdir.startswith(path + "/")]
    volumes = {v["name"]: v for v in job["template"]["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes[runs] and set(mounts.values()) <= set(volumes)

    # Pod 1's process, as Kubernetes starts it: the same variables reach the CLI, which asks
    # jax.distributed for exactly this process.
    pod_env = {
        **env,
        **{k: v["value"] for k, v in variables.items() if "value" in v},
        "REID_JAX_PROCESS_ID": "1",
    }
    assert container["command"] == ["bash", "launch/multihost.sh"]
    done = _run([*container["command"], *args], pod_env)
    assert done.returncode == 0, done.stderr
    seen, seen_args = _record(records, "1")
    assert seen_args == ["-m", "reid_jax.cli", *args]
    for key in ("REID_JAX_COORDINATOR", "REID_JAX_NUM_PROCESSES", "REID_JAX_PROCESS_ID"):
        monkeypatch.setenv(key, seen[key])
    assert cli._distributed_arguments() == {
        "coordinator_address": f"{host}:{port}",
        "num_processes": job["parallelism"],
        "process_id": 1,
        "cluster_detection_method": "deactivate",
    }
