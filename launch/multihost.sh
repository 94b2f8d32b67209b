#!/usr/bin/env bash
# Multi-host run: environment and arguments only (the logic is in reid_jax.cli). Start it once
# per process (usually one process per host, which then uses all of that host's devices);
# every process gets the same command and the same --workdir on a shared filesystem.
#
# Explicit arguments (any cluster, or several processes on one machine):
#   launch/multihost.sh --coordinator=node0:12345 --num_processes=2 --process_id=0 \
#       train --config configs/ssan.py:cuhk_pedes --config.data.root=/data/CUHK-PEDES \
#       --workdir /shared/runs/ssan_cuhk
#   launch/multihost.sh --coordinator=node0:12345 --num_processes=2 --process_id=1 train ...
#
# SLURM (process id and count from SLURM_PROCID / SLURM_NTASKS, coordinator = first node of
# the job on port $REID_JAX_PORT, default 12345):
#   srun --nodes=4 --ntasks-per-node=1 launch/multihost.sh train --config ... --workdir ...
#
# Open MPI (OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE; the coordinator must be given):
#   mpirun -np 4 launch/multihost.sh --coordinator=node0:12345 train --config ... --workdir ...
#
# Cloud TPU VM pods (jax.distributed.initialize() reads all three from the TPU metadata;
# launch/tpu_pod.sh runs this on every worker):
#   launch/multihost.sh --auto_detect train --config ... --workdir ...
#
# Launchers: launch/local_processes.sh (N processes on one machine), launch/slurm.sbatch,
# launch/tpu_pod.sh, launch/jobset.yaml (Kubernetes).
#
# REID_JAX_COORDINATOR, REID_JAX_NUM_PROCESSES and REID_JAX_PROCESS_ID, if already set, are
# used as they are. Process 0 (coordinator_address's host) must be reachable on that port
# from every process. Only process 0 writes metrics, eval files and pictures; every process
# writes its part of each checkpoint. Re-running the same command on every process resumes.
# The embedded dataset is generated under $REID_JAX_DATA by each process that lacks it: on a
# shared filesystem, generate it once first (a single-process run) or give each host its own.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 [--coordinator=HOST:PORT] [--num_processes=N] [--process_id=I] |" \
    "[--auto_detect] {train|evaluate} --config FILE[:ARG] --workdir DIR [--config.x.y=v ...]" >&2
  exit 2
}

auto_detect=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --coordinator=*) REID_JAX_COORDINATOR="${1#*=}" ;;
    --num_processes=*) REID_JAX_NUM_PROCESSES="${1#*=}" ;;
    --process_id=*) REID_JAX_PROCESS_ID="${1#*=}" ;;
    --auto_detect) auto_detect=1 ;;
    -h | --help) usage ;;
    *) break ;;
  esac
  shift
done
[ "$#" -gt 0 ] || usage

if [ -n "${SLURM_PROCID:-}" ] && [ -n "${SLURM_NTASKS:-}" ]; then
  REID_JAX_PROCESS_ID="${REID_JAX_PROCESS_ID:-${SLURM_PROCID}}"
  REID_JAX_NUM_PROCESSES="${REID_JAX_NUM_PROCESSES:-${SLURM_NTASKS}}"
  if [ -z "${REID_JAX_COORDINATOR:-}" ]; then
    # Not `| head -n 1`: under pipefail, scontrol would fail on the closed pipe (SIGPIPE).
    first_node="$(scontrol show hostnames "${SLURM_JOB_NODELIST}")"
    first_node="${first_node%%$'\n'*}"
    REID_JAX_COORDINATOR="${first_node}:${REID_JAX_PORT:-12345}"
  fi
elif [ -n "${OMPI_COMM_WORLD_RANK:-}" ]; then
  REID_JAX_PROCESS_ID="${REID_JAX_PROCESS_ID:-${OMPI_COMM_WORLD_RANK}}"
  REID_JAX_NUM_PROCESSES="${REID_JAX_NUM_PROCESSES:-${OMPI_COMM_WORLD_SIZE}}"
fi
for name in REID_JAX_COORDINATOR REID_JAX_NUM_PROCESSES REID_JAX_PROCESS_ID; do
  if [ "${auto_detect}" = 0 ] && [ -z "${!name:-}" ]; then
    echo "$0: ${name} is not set (give --coordinator/--num_processes/--process_id," \
      "or --auto_detect)" >&2
    usage
  fi
done

export REID_JAX_DISTRIBUTED=1 REID_JAX_COORDINATOR REID_JAX_NUM_PROCESSES REID_JAX_PROCESS_ID
# Compiled programs are kept between runs, so a resumed or repeated run skips most compiles.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${HOME}/.cache/reid_jax/jax_cache}"
export REID_JAX_DATA="${REID_JAX_DATA:-${HOME}/.cache/reid_jax}"
exec "${PYTHON:-python3}" -m reid_jax.cli "$@"
