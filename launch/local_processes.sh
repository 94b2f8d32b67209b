#!/usr/bin/env bash
# N processes on this machine, run as N hosts would run them: environment and arguments only.
# Each process is launch/multihost.sh with a coordinator on 127.0.0.1, the process count and
# its id; all of them get the same reid-jax arguments and the same --workdir.
#
#   launch/local_processes.sh 2 train --config configs/ssan.py:smoke --workdir runs/ssan_2p
#   launch/local_processes.sh --cpu_devices=4 2 train --config configs/ssan.py --workdir runs/x
#   launch/local_processes.sh 2 evaluate --workdir runs/ssan_2p
#
# Devices. GPUs: each process gets an equal, contiguous share of the GPUs through
# CUDA_VISIBLE_DEVICES (the list already in CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi
# lists); their number must divide by N. CPU (no GPU found, or JAX_PLATFORMS=cpu): each
# process gets --cpu_devices devices (default 1) through
# XLA_FLAGS=--xla_force_host_platform_device_count. On a TPU VM run one process per host
# instead (launch/tpu_pod.sh).
#
# Output. Process i's stdout and stderr go to <workdir>/logs/process_<i>.out (appended; the
# library writes its own log next to it, logs/process_<i>.log), and process 0's are shown
# here as well. Relative paths are relative to the repository, as in the other launchers.
#
# Ending. The script waits for every process. If one exits with a non-zero status, the
# others are killed (every step needs all of them, so they cannot go on) and the script
# exits with that status. Ctrl-C or SIGTERM asks every process to save a checkpoint and stop
# (re-running the same command resumes); a second one kills them.
#
# The coordinator listens on a free port ($REID_JAX_PORT if set). Needs Linux (setsid) and
# bash >= 5.1.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 [--cpu_devices=K] N {train|evaluate} --workdir DIR [reid-jax arguments]" >&2
  exit 2
}

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  echo "$0: needs bash >= 5.1, this is ${BASH_VERSION}" >&2
  exit 2
fi

cpu_devices=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --cpu_devices=*) cpu_devices="${1#*=}" ;;
    -h | --help) usage ;;
    *) break ;;
  esac
  shift
done
[ "$#" -ge 2 ] || usage
num_processes="$1"
shift
[[ "${num_processes}" =~ ^[1-9][0-9]*$ ]] || usage
[[ "${cpu_devices}" =~ ^[1-9][0-9]*$ ]] || usage

workdir=""
previous=""
for arg in "$@"; do
  case "${arg}" in
    --workdir=*) workdir="${arg#*=}" ;;
    *) if [ "${previous}" = "--workdir" ]; then workdir="${arg}"; fi ;;
  esac
  previous="${arg}"
done
if [ -z "${workdir}" ]; then
  echo "$0: --workdir is required (each process writes its output under <workdir>/logs)" >&2
  usage
fi

gpus=()
if [ "${JAX_PLATFORMS:-}" != "cpu" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a gpus <<<"${CUDA_VISIBLE_DEVICES}"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
  fi
fi
gpus_per_process=0
if [ "${#gpus[@]}" -gt 0 ]; then
  if ((${#gpus[@]} % num_processes != 0)); then
    echo "$0: ${#gpus[@]} GPUs (${gpus[*]}) do not split evenly into ${num_processes}" \
      "processes; set CUDA_VISIBLE_DEVICES to a list that does" >&2
    exit 2
  fi
  gpus_per_process=$((${#gpus[@]} / num_processes))
fi
# The device count flag is ours to set: one already in XLA_FLAGS (e.g. from a test run)
# would give every process the same count.
xla_flags="$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g' <<<"${XLA_FLAGS:-}")"

PYTHON="${PYTHON:-python3}"
port="${REID_JAX_PORT:-$("${PYTHON}" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}"

mkdir -p "${workdir}/logs"
declare -A process_of=()  # pid -> process id
running=()                # pids of the processes not waited for yet
stop_requested=0

signal_all() {  # signal every process group still running
  local pid
  for pid in "${running[@]}"; do
    kill "-$1" -- "-${pid}" 2>/dev/null || true
  done
}

kill_all() {  # and wait until they are gone
  local pid
  signal_all KILL
  for pid in "${running[@]}"; do
    wait "${pid}" 2>/dev/null || true
  done
  running=()
}

# shellcheck disable=SC2317  # run by the trap below
on_signal() {
  if [ "${stop_requested}" = 1 ]; then
    echo "$0: killing every process" >&2
    kill_all
    exit 130
  fi
  stop_requested=1
  echo "$0: asking every process to save a checkpoint and stop (again to kill them)" >&2
  signal_all TERM
}
trap on_signal INT TERM
trap kill_all EXIT  # nothing outlives the launcher

for ((i = 0; i < num_processes; i++)); do
  out="${workdir}/logs/process_${i}.out"
  environment=("XLA_FLAGS=${xla_flags} --xla_force_host_platform_device_count=${cpu_devices}")
  if [ "${gpus_per_process}" -gt 0 ]; then
    share=("${gpus[@]:$((i * gpus_per_process)):${gpus_per_process}}")
    environment+=("CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${share[*]}")")
  fi
  : >>"${out}"
  if [ "${i}" = 0 ]; then
    shown_from=$(($(stat -c %s "${out}") + 1))  # this run's output only
  fi
  # Each process leads its own process group, so that killing it takes its children along
  # and Ctrl-C reaches only this script, which decides what the processes get.
  setsid env "${environment[@]}" bash launch/multihost.sh --coordinator="127.0.0.1:${port}" \
    --num_processes="${num_processes}" --process_id="${i}" "$@" </dev/null >>"${out}" 2>&1 &
  running+=("$!")
  process_of[$!]="${i}"
  echo "$0: process ${i} (pid $!) writes to ${out}" >&2
done
tail -c "+${shown_from}" -f --pid="${running[0]}" "${workdir}/logs/process_0.out" &
shown=$!

# Polls bash's own job table instead of `wait -n`: when processes end while a signal trap
# runs, a later `wait -n PID...` answers "no such job" for them (bash 5.2) and would spin
# forever, while `wait PID` still returns each one's status.
status=0
while [ "${#running[@]}" -gt 0 ]; do
  alive=" $(jobs -rp | tr '\n' ' ') "
  remaining=()
  failed=""
  for pid in "${running[@]}"; do
    if [[ "${alive}" == *" ${pid} "* ]]; then
      remaining+=("${pid}")
      continue
    fi
    code=0
    wait "${pid}" || code=$?
    if [ "${code}" != 0 ] && [ -z "${failed}" ]; then
      failed="${pid}"
      status="${code}"
    fi
  done
  running=("${remaining[@]}")
  if [ -n "${failed}" ]; then
    echo "$0: process ${process_of[${failed}]} (pid ${failed}) exited with status" \
      "${status}; killing the others" >&2
    kill_all
    break
  fi
  if [ "${#running[@]}" -gt 0 ]; then
    sleep 0.2 &
    wait "$!" || true  # a signal interrupts this wait; on_signal has run
  fi
done
wait "${shown}" || true
if [ "${status}" = 0 ] && [ "${stop_requested}" = 1 ]; then
  status=130
fi
exit "${status}"
