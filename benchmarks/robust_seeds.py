"""One robust-table row over seeds: 3 attack seeds x 2 training seeds, undefended and defended, so
that a row's figure is not one draw (issue 42).

    python benchmarks/robust_seeds.py sasrec '{"kind": "copy", "splice": "anywhere"}' --name copy-any
    python benchmarks/robust_seeds.py hstu '{"kind": "copy", "budget": 0.02, "targets_per_fake": 3, "targets_in_last": 20}' --name copy2-tpf3
    ... --dry-run     # print the training commands only
    ... --report-only # the table of the pairs trained so far (another process may still be training)

Per training seed (``--seed_everything``) one clean run and one defended run on the clean data
(the defence's price when nobody attacks); per (attack seed, training seed) one undefended and one
defended run (``--defence``), each trained with ``train.py fit`` on
``configs/robust/<backbone>-<dataset>.yaml`` one at a time (``--jobs``), a run whose final.ckpt
exists reused; then ``evaluate.py robust`` on each pair against the clean run of its training seed
(test split, real users only). Prints, per metric, the median and the range over the pairs:
T-HR@50 reduction (1 - defended / undefended), the update's ROC-AUC, the fakes' mean final
weight, real users below weight .5, and the defended run's HR@10 against the undefended one; and, per training seed, the
clean defended run's HR@10 against the clean run's and its real users below .5. Each training is timed
(``<run>.cost.json``: wall seconds, process CPU seconds, the 1-minute load average at its start and
end), and a second table gives the defended / undefended ratios of each pair's wall and CPU time:
on a shared machine the CPU ratio is the one other jobs change least.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch


def train_command(config: str, name: str, out: Path, root: str, seed: int, attack: dict | None, defence: str | None) -> str:
    args = ["python", "train.py", "fit", "--config", config, *(["--config", defence] if defence else []),
            "--seed_everything", str(seed), "--data.init_args.root", root,
            *(["--data.init_args.attack", json.dumps(attack)] if attack else []),
            "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", name,
            "--trainer.logger.init_args.version", "0"]
    return " ".join(shlex.quote(a) for a in args) + f" > {shlex.quote(str(out / name))}.log 2>&1"


def final_ckpt(out: Path, name: str) -> Path:
    return out / name / "version_0" / "checkpoints" / "final.ckpt"


def fakes_mean_weight(ckpt: Path, num_real: int, num_fakes: int) -> float:
    """The fakes' mean final loss weight, σ(w) / σ(w0), from the defended checkpoint's callback state."""
    callbacks = torch.load(ckpt, weights_only=False, map_location="cpu")["callbacks"]
    state = next(v for k, v in callbacks.items() if "FraudsterReweighting" in k)
    w = torch.sigmoid(state["w"].float()) / torch.sigmoid(torch.tensor(float(state["w0"])))
    return float(w[num_real:num_real + num_fakes].mean())


def run_timed(name: str, command: str, out: Path) -> int:
    """Runs one training command (one torch thread), writing ``<out>/<name>.cost.json``."""
    timing = out / f"{name}.time"
    load, start = os.getloadavg()[0], time.perf_counter()
    rc = subprocess.run(f"/usr/bin/time -f '%e %U %S' -o {shlex.quote(str(timing))} {command}", shell=True,
                        env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    wall = time.perf_counter() - start
    if rc:
        print(f"FAILED ({rc}): {command}", flush=True)
        return rc
    _, user, system = (float(v) for v in timing.read_text().split()[-3:])
    (out / f"{name}.cost.json").write_text(json.dumps(
        {"wall_s": wall, "cpu_s": user + system, "load_start": load, "load_end": os.getloadavg()[0]}))
    return 0


def cost_metrics(undefended: dict, defended: dict) -> dict[str, float]:
    """A pair's defended / undefended wall and CPU time, and the load averages its two runs saw."""
    return {"wall_ratio": defended["wall_s"] / undefended["wall_s"], "cpu_ratio": defended["cpu_s"] / undefended["cpu_s"],
            "undefended_wall_s": undefended["wall_s"], "defended_wall_s": defended["wall_s"],
            "undefended_cpu_s": undefended["cpu_s"], "defended_cpu_s": defended["cpu_s"],
            "load_max": max(undefended["load_start"], undefended["load_end"], defended["load_start"], defended["load_end"])}


def pair_metrics(report: dict, defended_ckpt: Path) -> dict[str, float]:
    """The row's metrics from one ``evaluate.py robust`` report of an undefended and a defended run."""
    (entry,) = report["attacks"].values()
    und, dfd = entry["undefended"], entry["defended"]
    num_real = entry["real_weights"]["users"]
    return {"reduction": 1 - dfd["t_hr@50"] / und["t_hr@50"] if und["t_hr@50"] else float("nan"),
            "update_auc": (entry["detection"].get("update") or entry["detection"]["update (max percentile)"])["auc"],  # older reports
            "fakes_weight": fakes_mean_weight(defended_ckpt, num_real, entry["fakes"]),
            "real_below_0.5": entry["real_weights"]["below_0.5"],
            "hr@10_change": dfd["hr@10"] / und["hr@10"] - 1,
            "undefended_t_hr@50": und["t_hr@50"], "defended_t_hr@50": dfd["t_hr@50"]}


def clean_pair_metrics(report: dict) -> dict[str, float]:
    """The defence's price when nobody attacks, from ``evaluate.py robust`` of a clean run and a
    defended run on the same clean data."""
    (defended,) = report["defended_without_attack"]
    return {"hr@10_change": defended["hr@10"] / report["clean_metrics"]["hr@10"] - 1,
            "real_below_0.5": defended["real_weights"]["below_0.5"], "clean_hr@10": report["clean_metrics"]["hr@10"],
            "defended_hr@10": defended["hr@10"]}


def summarise(rows: list[dict[str, float]]) -> str:
    """A Markdown table: per metric, the median and the range over the rows."""
    lines = ["| metric | median | range | n |", "|---|---|---|---|"]
    for key in rows[0]:
        values = [r[key] for r in rows]
        lines.append(f"| {key} | {statistics.median(values):.4g} | {min(values):.4g} – {max(values):.4g} | {len(values)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backbone", help="sasrec or hstu: configs/robust/<backbone>-<dataset>.yaml")
    p.add_argument("attack", help="the attack's options as JSON, without its seed")
    p.add_argument("--name", required=True, help="the row's name (run folder names)")
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--root", default=None, help="data folder (default ../shared/data/<dataset>)")
    p.add_argument("--defence", default="configs/robust/defence.yaml")
    p.add_argument("--attack-seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default=None, help="runs folder (default runs/robust-seeds/<backbone>)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time (one thread each)")
    p.add_argument("--dry-run", action="store_true", help="print the training commands, run nothing")
    p.add_argument("--report-only", action="store_true", help="train nothing; report the pairs trained so far")
    args = p.parse_args()
    config = f"configs/robust/{args.backbone}-{args.dataset}.yaml"
    if not Path(config).exists():
        sys.exit(f"no config {config} (backbone {args.backbone}, dataset {args.dataset})")
    root = args.root or f"../shared/data/{args.dataset}"
    out = Path(args.out or f"runs/robust-seeds/{args.backbone}")
    attack = json.loads(args.attack)
    if "seed" in attack:
        sys.exit("attack: leave out its seed; --attack-seeds sets it")
    commands, pairs, clean_pairs = [], [], []
    for t in args.train_seeds:
        commands.append((f"clean-t{t}", train_command(config, f"clean-t{t}", out, root, t, None, None)))
        commands.append((f"clean-t{t}-defended", train_command(config, f"clean-t{t}-defended", out, root, t, None, args.defence)))
        clean_pairs.append((f"clean-t{t}", f"clean-t{t}-defended", f"report-clean-t{t}"))
        for a in args.attack_seeds:
            und, dfd = f"{args.name}-a{a}-t{t}", f"{args.name}-a{a}-t{t}-defended"
            commands.append((und, train_command(config, und, out, root, t, {**attack, "seed": a}, None)))
            commands.append((dfd, train_command(config, dfd, out, root, t, {**attack, "seed": a}, args.defence)))
            pairs.append((f"clean-t{t}", und, dfd, f"report-{args.name}-a{a}-t{t}"))
    todo = [(name, c) for name, c in commands if not final_ckpt(out, name).exists()]
    print("\n".join(c for _, c in todo) or "every run exists", flush=True)
    if args.dry_run:
        return
    out.mkdir(parents=True, exist_ok=True)
    if todo and not args.report_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: run_timed(*job, out), todo))
    rows, costs, clean_rows = [], [], []

    def timed(und: str, dfd: str) -> None:
        files = [out / f"{name}.cost.json" for name in (und, dfd)]
        if all(f.exists() for f in files):
            costs.append(cost_metrics(*(json.loads(f.read_text()) for f in files)))

    for clean, dfd, report in [p for p in clean_pairs if all(final_ckpt(out, name).exists() for name in p[:2])]:
        folder = out / report
        if not (folder / "robust_metrics.json").exists():
            subprocess.run([sys.executable, "evaluate.py", "robust", "--clean", str(final_ckpt(out, clean)), "--runs",
                            str(final_ckpt(out, dfd)), "--root", root, "--out", str(folder)], check=True)
        clean_rows.append(clean_pair_metrics(json.loads((folder / "robust_metrics.json").read_text())))
        timed(clean, dfd)
    done = [p for p in pairs if all(final_ckpt(out, name).exists() for name in p[:3])]
    for clean, und, dfd, report in done:
        folder = out / report
        if not (folder / "robust_metrics.json").exists():
            subprocess.run([sys.executable, "evaluate.py", "robust", "--clean", str(final_ckpt(out, clean)), "--runs",
                            str(final_ckpt(out, und)), str(final_ckpt(out, dfd)), "--root", root, "--out", str(folder)], check=True)
        rows.append(pair_metrics(json.loads((folder / "robust_metrics.json").read_text()), final_ckpt(out, dfd)))
        timed(und, dfd)
    print(f"\n{args.backbone}, {args.name} {json.dumps(attack)}: attack seeds {args.attack_seeds} x training seeds "
          f"{args.train_seeds}, defence {args.defence}; {len(done)} of {len(pairs)} pairs trained\n")
    if rows:
        print(summarise(rows))
    if clean_rows:
        print(f"\nNo attack: the defended clean run against the clean run, {len(clean_rows)} training seeds:\n\n{summarise(clean_rows)}")
    if costs:
        print(f"\nDefended / undefended time, {len(costs)} pairs (each run one torch thread, --jobs {args.jobs}):\n\n{summarise(costs)}")


if __name__ == "__main__":
    main()
