#!/usr/bin/env bash
# A Cloud TPU VM pod slice: the same reid-jax command on every worker of the slice, over
# `gcloud compute tpus tpu-vm ssh --worker=all`, as launch/multihost.sh --auto_detect (on TPU
# VMs jax.distributed.initialize() reads the coordinator, process count and process id from
# the TPU metadata; one process per worker uses all of its chips).
#
# First (and after each change to the code), from this checkout: copy its committed files
# (git archive HEAD) to every worker and install them there in a virtual environment, with
# jax's TPU extra:
#   launch/tpu_pod.sh --tpu=my-v4-32 --zone=us-central2-b install
#
# Then run (paths are the workers'):
#   launch/tpu_pod.sh --tpu=my-v4-32 --zone=us-central2-b train \
#       --config configs/ssan.py:cuhk_pedes --config.data.root=/mnt/shared/CUHK-PEDES \
#       --workdir /mnt/shared/runs/ssan_cuhk
#
# --repo is the repository's folder on the workers (default ~/reid_jax), --python the
# interpreter there (default .venv/bin/python in it), --project the Google Cloud project
# (default: gcloud's). The run folder must be a filesystem every worker mounts at the same
# path (Filestore, or a bucket through gcsfuse). Every worker's output streams here; each
# process also writes <workdir>/logs/process_<i>.log, and process 0 alone writes metrics,
# evaluation files and pictures. GCLOUD names another gcloud (tests use a stand-in).
set -euo pipefail

usage() {
  echo "usage: $0 --tpu=NAME --zone=ZONE [--project=P] [--repo=DIR] [--python=PATH]" \
    "{install | {train|evaluate} --config FILE[:ARG] --workdir DIR [--config.x.y=v ...]}" >&2
  exit 2
}

tpu=""
zone=""
project=()
# shellcheck disable=SC2088  # the worker's shell expands the ~
repo="~/reid_jax"
python=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project=("--project=${1#*=}") ;;
    --repo=*) repo="${1#*=}" ;;
    --python=*) python="${1#*=}" ;;
    -h | --help) usage ;;
    *) break ;;
  esac
  shift
done
if [ -z "${tpu}" ] || [ -z "${zone}" ] || [ "$#" -eq 0 ]; then
  usage
fi

gcloud_tpu=("${GCLOUD:-gcloud}" compute tpus tpu-vm)
where=(--zone="${zone}" "${project[@]}" --worker=all)
# ${repo} goes unquoted into the workers' command lines, so that their shell expands a ~.
if [ "$1" = install ]; then
  [ "$#" -eq 1 ] || usage
  cd "$(dirname "$0")/.."
  archive="$(mktemp --suffix=.tar.gz)"
  trap 'rm -f "${archive}"' EXIT
  git archive --format=tar.gz -o "${archive}" HEAD
  "${gcloud_tpu[@]}" scp "${archive}" "${tpu}:reid_jax.tar.gz" "${where[@]}"
  "${gcloud_tpu[@]}" ssh "${tpu}" "${where[@]}" --command="mkdir -p ${repo} &&
    tar -xzf ~/reid_jax.tar.gz -C ${repo} && rm ~/reid_jax.tar.gz && cd ${repo} &&
    python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]'"
  exit
fi

# The reid-jax arguments travel as one shell command line: quote each one for that shell.
printf -v arguments ' %q' "$@"
if [ -n "${python}" ]; then
  printf -v interpreter '%q' "${python}"
else
  interpreter='.venv/bin/python'
fi
exec "${gcloud_tpu[@]}" ssh "${tpu}" "${where[@]}" \
  --command="cd ${repo} && PYTHON=${interpreter} launch/multihost.sh --auto_detect${arguments}"
