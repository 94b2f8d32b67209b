#!/usr/bin/env bash
# Single-host run: environment and arguments only (the logic is in reid_jax.cli).
#
#   launch/local.sh                                   # SSAN on the embedded dataset
#   launch/local.sh train --config configs/ssan.py:cuhk_pedes \
#       --config.data.root=/data/CUHK-PEDES --workdir runs/ssan_cuhk
#   launch/local.sh evaluate --config configs/ssan.py --workdir runs/ssan
#
# Re-running the same command resumes from the run's latest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

# Compiled programs are kept between runs, so a resumed or repeated run skips most compiles.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${HOME}/.cache/reid_jax/jax_cache}"
# Generated datasets (the embedded one) live here unless a config sets data.root.
export REID_JAX_DATA="${REID_JAX_DATA:-${HOME}/.cache/reid_jax}"

if [ "$#" -eq 0 ]; then
  set -- train --config configs/ssan.py --workdir runs/ssan
fi
exec "${PYTHON:-python3}" -m reid_jax.cli "$@"
