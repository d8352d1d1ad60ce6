"""benchmarks/robust_seeds.py: the runs it plans and the row it reads from each pair's report."""
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from robust_seeds import clean_pair_metrics, pair_metrics, summarise  # noqa: E402


def test_the_protocol_plans_a_clean_run_per_training_seed_and_a_pair_per_seed_pair(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robust_seeds.py"), "sasrec", '{"kind": "copy"}',
                          "--name", "copy", "--out", str(tmp_path), "--dry-run"], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 * 2 + 3 * 2 * 2  # per training seed a clean and a clean defended run
    assert sum("--config configs/robust/defence.yaml" in line for line in lines) == 2 + 6
    assert sum("clean-t2-defended" in line and "attack" not in line for line in lines) == 1
    assert sum('"seed": 3' in line and "--seed_everything 2" in line for line in lines) == 2
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robust_seeds.py"), "sasrec", '{"kind": "copy", "seed": 1}',
                          "--name", "copy", "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "--attack-seeds" in bad.stderr


def test_a_pair_reads_reduction_auc_weights_and_price(tmp_path):
    ckpt = tmp_path / "final.ckpt"
    w = torch.logit(torch.tensor([0.5, 0.5, 0.25, 0.05, 0.01]))  # 3 real users, then 2 fakes
    torch.save({"callbacks": {"FraudsterReweighting": {"w": w, "w0": 0.0}}}, ckpt)
    report = {"attacks": {"copy": {"fakes": 2, "real_weights": {"users": 3, "below_0.5": 1},
                                   "undefended": {"t_hr@50": 0.02, "hr@10": 0.25},
                                   "defended": {"t_hr@50": 0.005, "hr@10": 0.2475},
                                   "detection": {"update": {"auc": 0.97}}}}}
    row = pair_metrics(report, ckpt)
    assert abs(row["reduction"] - 0.75) < 1e-9 and row["update_auc"] == 0.97
    assert abs(row["fakes_weight"] - 0.06) < 1e-5  # (0.1 + 0.02) / 2, weights σ(w) / σ(0)
    assert abs(row["hr@10_change"] + 0.01) < 1e-9 and row["real_below_0.5"] == 1
    table = summarise([row, {**row, "reduction": 0.5}, {**row, "reduction": 0.9}])
    assert "| reduction | 0.75 | 0.5 – 0.9 | 3 |" in table


def test_each_training_is_timed_and_a_pair_reads_its_wall_and_cpu_ratios(tmp_path):
    from robust_seeds import cost_metrics, run_timed

    busy = f"{sys.executable} -c 'sum(range(3_000_000))'"
    assert run_timed("busy", busy + f" > {tmp_path / 'busy.log'} 2>&1", tmp_path) == 0
    cost = __import__("json").loads((tmp_path / "busy.cost.json").read_text())
    assert cost["wall_s"] > 0 and 0 < cost["cpu_s"] and cost["load_start"] >= 0
    assert run_timed("fails", f"{sys.executable} -c 'raise SystemExit(3)'", tmp_path) == 3
    assert not (tmp_path / "fails.cost.json").exists()
    und = {"wall_s": 100.0, "cpu_s": 90.0, "load_start": 1.0, "load_end": 2.0}
    row = cost_metrics(und, {"wall_s": 150.0, "cpu_s": 117.0, "load_start": 3.5, "load_end": 0.5})
    assert row["wall_ratio"] == 1.5 and abs(row["cpu_ratio"] - 1.3) < 1e-9 and row["load_max"] == 3.5


def test_report_only_reads_the_pairs_trained_so_far(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robust_seeds.py"), "sasrec", '{"kind": "copy"}',
                          "--name", "copy", "--out", str(tmp_path), "--report-only"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "0 of 6 pairs trained" in out.stdout and not list(tmp_path.glob("*.log"))


def test_a_clean_pair_reads_the_price_when_nobody_attacks():
    report = {"clean_metrics": {"hr@10": 0.25},
              "defended_without_attack": [{"hr@10": 0.2475, "real_weights": {"users": 3, "below_0.5": 7}}]}
    row = clean_pair_metrics(report)
    assert abs(row["hr@10_change"] + 0.01) < 1e-9 and row["real_below_0.5"] == 7
