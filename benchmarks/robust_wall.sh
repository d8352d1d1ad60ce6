#!/usr/bin/env bash
# Wall time of a defended run against the undefended one, each run alone (one after the other, all
# threads), from start to exit of train.py; prints a Markdown table with the ratio.
#
#   bash benchmarks/robust_wall.sh                       # SASRec ML-1M, copy attack seed 1, targets in the last 10
#   BACKBONE=hstu ATTACK='{"kind": "bandwagon", "seed": 3}' bash benchmarks/robust_wall.sh
#
# Environment: BACKBONE (sasrec), ROOT (../shared/data/ml-1m), ATTACK (JSON), DEFENCE
# (configs/robust/defence.yaml), THREADS (OMP_NUM_THREADS, default 2), OUT (runs/robust-wall), EXTRA (more
# train.py arguments for both runs, as robust_suite.sh's, e.g. "--trainer.max_epochs 3" for a quick check).
# Run it on an otherwise idle machine: the point is the ratio of two runs that had the same machine.
set -euo pipefail
backbone=${BACKBONE:-sasrec}
root=${ROOT:-../shared/data/ml-1m}
attack=${ATTACK:-'{"kind": "copy", "seed": 1, "targets_in_last": 10}'}
defence=${DEFENCE:-configs/robust/defence.yaml}
out=${OUT:-runs/robust-wall}
mkdir -p "$out"
declare -A took
for name in undefended defended; do
  extra=(); [ $name = undefended ] || extra=(--config "$defence")
  start=$(date +%s.%N)
  OMP_NUM_THREADS=${THREADS:-2} python train.py fit --config "configs/robust/$backbone-ml-1m.yaml" "${extra[@]}" \
    --data.init_args.attack "$attack" --data.init_args.root "$root" --trainer.logger.init_args.save_dir "$out" \
    --trainer.logger.init_args.name "$name" ${EXTRA:-} > "$out/$name.log" 2>&1 || { echo "$name run failed: see $out/$name.log" >&2; exit 1; }
  took[$name]=$(python -c "import time; print(round(time.time() - $start, 1))")
done
echo "| $backbone, attack $attack | undefended | defended ($defence) | ratio |"
echo "|---|---|---|---|"
echo "| wall s | ${took[undefended]} | ${took[defended]} | $(python -c "print(f'{${took[defended]} / ${took[undefended]}:.2f}x')") |"
