#!/usr/bin/env bash
# The ML-1M table on one GPU: HSTU and SASRec (fp32) side by side, then HSTU in bf16-mixed and
# HSTU-large side by side, each trained with its committed config and evaluated on the test split;
# prints one table (test metrics, median epoch and validation time, wall clock of train + evaluate).
#
#   bash benchmarks/gpu_ml1m.sh                   # ROOT=../shared/data/ml-1m OUT=runs/gpu-ml1m
#   EXTRA="--trainer.max_epochs 1 --trainer.limit_train_batches 2" bash benchmarks/gpu_ml1m.sh   # smoke
#
# Runs share the GPU in pairs, so each wall clock is that of a run with a neighbour. Loggers: CSV
# only (W&B needs a package that GPU images often lack). A pair member that fails is reported as such.
# PYTHON: the interpreter (default python).
set -uo pipefail
root=${ROOT:-../shared/data/ml-1m}
out=${OUT:-runs/gpu-ml1m}
extra=${EXTRA:-}
py=${PYTHON:-python}
mkdir -p "$out"
run() {  # name config extra...
  local name=$1 cfg=$2; shift 2
  local t0=$SECONDS
  # shellcheck disable=SC2086
  "$py" train.py fit --config "$cfg" --data.init_args.root "$root" --trainer.enable_progress_bar false \
    --trainer.logger "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: $out, name: $name}}]" \
    "$@" $extra > "$out/$name.log" 2>&1 \
    && "$py" evaluate.py model --ckpt "$out/$name/version_0" >> "$out/$name.log" 2>&1
  echo "$name rc=$? wall=$((SECONDS - t0))" >> "$out/walls.txt"
}
rm -f "$out/walls.txt"
run hstu configs/hstu/ml-1m.yaml & run sasrec configs/sasrec/ml-1m.yaml & wait
run hstu-bf16 configs/hstu/ml-1m.yaml --trainer.precision bf16-mixed & run hstu-large configs/hstu/ml-1m-large.yaml & wait
"$py" - "$out" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
walls = dict(line.split(" ", 1) for line in (out / "walls.txt").read_text().splitlines())
print("| run | HR@10 | NDCG@10 | HR@50 | NDCG@50 | HR@200 | NDCG@200 | best val epoch | median epoch s | median val s | wall s (train + eval) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("hstu", "sasrec", "hstu-bf16", "hstu-large"):
    run = out / name / "version_0"
    status = walls.get(name, "not run")
    if not (run / "test_metrics.json").exists():
        print(f"| {name} | failed ({status}; see {out / (name + '.log')}) |"); continue
    res = json.loads((run / "test_metrics.json").read_text())
    m = res["metrics"]["model"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    ep = [float(r["time/train_epoch_s"]) for r in rows if r.get("time/train_epoch_s")]
    va = [float(r["time/val_s"]) for r in rows if r.get("time/val_s")]
    best = Path(res["checkpoint"]).name.split("-")[0].removeprefix("epoch")
    cells = " | ".join(f"{m[k]:.4f}" for k in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200"))
    wall = status.split("wall=")[-1]
    print(f"| {name} | {cells} | {int(best) + 1} | {statistics.median(ep):.2f} | {statistics.median(va):.2f} | {wall} |")
PY
