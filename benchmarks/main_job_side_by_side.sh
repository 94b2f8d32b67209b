#!/bin/bash
# The embedded SSAN main job from two checkouts, alternating, 64 steps each: training images/s
# (the loop's logged figure, averaged over the intervals after the first), final loss, wall.
# Usage: benchmarks/main_job_side_by_side.sh BEFORE_CHECKOUT AFTER_CHECKOUT [ROUNDS] [PYTHON]
# e.g. git worktree add /tmp/before 1e01553 && benchmarks/main_job_side_by_side.sh /tmp/before .
set -u
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); rounds=${3:-2}; python=${4:-python}
out=$(mktemp -d)
export REID_JAX_DATA=${REID_JAX_DATA:-$out/data}
for round in $(seq "$rounds"); do
  for side in before after; do
    if [ "$side" = before ]; then dir=$before; else dir=$after; fi
    workdir=$out/${side}_$round
    start=$(date +%s.%N)
    (cd "$dir" && "$python" -m reid_jax.cli train --config configs/ssan.py --workdir "$workdir" \
      --config.train.num_steps=64 > "$out/${side}_$round.log" 2>&1)
    end=$(date +%s.%N)
    figures=$("$python" - "$workdir/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rates = [r["train/images_per_second"] for r in rows if "train/images_per_second" in r][1:]
loss = [r["train/loss"] for r in rows if "train/loss" in r][-1]
print(f"images/s {sum(rates) / len(rates):.1f}, final loss {loss}")
PY
)
    echo "round $round $side: $figures, wall $(echo "$end - $start" | bc) s, load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
