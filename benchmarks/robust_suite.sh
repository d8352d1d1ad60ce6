#!/usr/bin/env bash
# Poisoning experiments end to end: a clean run, every attack undefended, every attack other than the
# defence's known one (random) defended, then `evaluate.py robust` on all of them (prints the table).
#
#   bash benchmarks/robust_suite.sh sasrec                   # configs/robust/sasrec-ml-1m.yaml
#   bash benchmarks/robust_suite.sh hstu random,bandwagon    # a subset of attacks
#
# Environment: ROOT (data folder, default ../shared/data/ml-1m), DATASET (ml-1m), OUT (runs folder,
# default runs/robust-suite/<backbone>), JOBS (runs in parallel, default 2, one thread each), SEED
# (attack seed, default 1), ATTACK_OPTIONS (more attack options for every attack, as JSON members,
# e.g. '"targets_in_last": 20'), ATTACK_NAME (suffix of the attacked runs' names, e.g. -last20, so
# runs with other attack options do not reuse these), DEFENCE (defence config, default configs/robust/defence.yaml),
# DEFENCE_ARGS (more train.py arguments for the defended runs only), DEFENDED (their name suffix,
# default "defended"), EXTRA (more train.py arguments for every run), REPORT (report folder, default
# $OUT/report), UNDEFENDED_ONLY=1 (the clean and undefended runs only). A run whose final.ckpt exists
# is not trained again, so a second defence variant reuses the clean and undefended runs. Every run
# is evaluated from its final state (checkpoints/final.ckpt): the epoch count is fixed in the
# config, never chosen on the test split.
set -euo pipefail
backbone=${1:?usage: robust_suite.sh sasrec|hstu [attacks]}
attacks=${2:-random,bandwagon,segment,model}
dataset=${DATASET:-ml-1m}
root=${ROOT:-../shared/data/$dataset}
out=${OUT:-runs/robust-suite/$backbone}
jobs=${JOBS:-2}
seed=${SEED:-1}
defence=${DEFENCE:-configs/robust/defence.yaml}
defended=${DEFENDED:-defended}
suffix=${ATTACK_NAME:-}
config=configs/robust/$backbone-$dataset.yaml
[ -f "$config" ] || { echo "no config $config (backbone $backbone, dataset $dataset)" >&2; exit 2; }
mkdir -p "$out"

defends() {  # whether attack $1 gets a defended run: every attack but the known one (random)
  [ "$1" != random ] && [ -z "${UNDEFENDED_ONLY:-}" ]
}
run() {  # name, extra arguments...
  local name=$1; shift
  [ -f "$out/$name/version_0/checkpoints/final.ckpt" ] && return
  echo "python train.py fit --config $config $* --data.init_args.root $root" \
       "--trainer.logger.init_args.save_dir $out --trainer.logger.init_args.name $name" \
       "--trainer.logger.init_args.version 0 ${EXTRA:-} > $out/$name.log 2>&1"
}
{
  run clean
  for a in ${attacks//,/ }; do
    attack="'{\"kind\": \"$a\", \"seed\": $seed${ATTACK_OPTIONS:+, $ATTACK_OPTIONS}}'"
    run "$a$suffix" --data.init_args.attack "$attack"
    ! defends "$a" || run "$a$suffix-$defended" --config "$defence" --data.init_args.attack "$attack" ${DEFENCE_ARGS:-}
  done
} > "$out/commands$suffix-$defended.txt"
cat "$out/commands$suffix-$defended.txt"
start=$(date +%s)
OMP_NUM_THREADS=1 xargs -d '\n' -P "$jobs" -n 1 bash -c 'eval "$1" || echo "FAILED: $1"' _ < "$out/commands$suffix-$defended.txt"
echo "training: $(( $(date +%s) - start )) s wall"

ckpt() { echo "$out/$1/version_0/checkpoints/final.ckpt"; }
runs=()
for a in ${attacks//,/ }; do
  runs+=("$(ckpt "$a$suffix")")
  ! defends "$a" || runs+=("$(ckpt "$a$suffix-$defended")")
done
python evaluate.py robust --clean "$(ckpt clean)" --runs "${runs[@]}" --root "$root" --out "${REPORT:-$out/report}"
