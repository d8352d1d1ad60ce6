#!/usr/bin/env bash
# Wall and process CPU time of a defended run against the undefended one, alternating (undefended,
# defended, undefended, ...; PAIRS pairs), each run alone, from start to exit of train.py; prints a
# Markdown table with each pair's ratios and the 1-minute load average at each run's start. On a
# machine shared with other jobs the CPU-time ratio is the figure their load changes least.
#
#   bash benchmarks/robust_wall.sh                       # SASRec ML-1M, copy attack seed 1, targets in the last 10
#   BACKBONE=hstu ATTACK='{"kind": "bandwagon", "seed": 3}' bash benchmarks/robust_wall.sh
#
# Environment: BACKBONE (sasrec), ROOT (../shared/data/ml-1m), ATTACK (JSON), DEFENCE
# (configs/robust/defence.yaml), THREADS (OMP_NUM_THREADS, default 2), PAIRS (2), OUT (runs/robust-wall),
# EXTRA (more train.py arguments for both runs, as robust_suite.sh's, e.g. "--trainer.max_epochs 3"
# for a quick check). The defence's LM embeddings are cached across runs ($GENREC_CACHE/lm_embeddings):
# only a first run on a catalogue embeds it.
set -euo pipefail
backbone=${BACKBONE:-sasrec}
root=${ROOT:-../shared/data/ml-1m}
attack=${ATTACK:-'{"kind": "copy", "seed": 1, "targets_in_last": 10}'}
defence=${DEFENCE:-configs/robust/defence.yaml}
out=${OUT:-runs/robust-wall}
mkdir -p "$out"
echo "| $backbone, attack $attack, pair | undefended wall / CPU s (load) | defended ($defence) wall / CPU s (load) | wall ratio | CPU ratio |"
echo "|---|---|---|---|---|"
for pair in $(seq 1 "${PAIRS:-2}"); do
  row=()
  for name in undefended defended; do
    extra=(); [ $name = undefended ] || extra=(--config "$defence")
    load=$(cut -d' ' -f1 /proc/loadavg)
    OMP_NUM_THREADS=${THREADS:-2} /usr/bin/time -f '%e %U %S' -o "$out/$name-$pair.time" \
      python train.py fit --config "configs/robust/$backbone-ml-1m.yaml" "${extra[@]}" \
      --data.init_args.attack "$attack" --data.init_args.root "$root" --trainer.logger.init_args.save_dir "$out" \
      --trainer.logger.init_args.name "$name-$pair" ${EXTRA:-} > "$out/$name-$pair.log" 2>&1 \
      || { echo "$name run failed: see $out/$name-$pair.log" >&2; exit 1; }
    read -r wall user sys < <(tail -1 "$out/$name-$pair.time")
    row+=("$wall" "$(python -c "print(round($user + $sys, 1))")" "$load")
  done
  python -c "
uw, uc, ul, dw, dc, dl = map(float, '${row[*]}'.split())
print(f'| {$pair} | {uw:.0f} / {uc:.0f} ({ul}) | {dw:.0f} / {dc:.0f} ({dl}) | {dw / uw:.2f}x | {dc / uc:.2f}x |')"
done
