import json

import numpy as np
import pytest

import evaluate
from genrec.cli import main as train_main
from genrec.evaluation.compare import compare_runs
from genrec.modules import RetrievalModule
from genrec.robust.metrics import target_metrics
from genrec.robust.report import clean_datamodule
from tests.robust.test_callback import tiny_args


def last_ckpt(folder):
    return str(next(folder.glob("lightning_logs/version_0/checkpoints/last.ckpt")))


def test_robust_report_from_checkpoints(tmp_path):
    train_main(tiny_args(tmp_path / "clean", epochs=2, attack=None, defended=False))
    train_main(tiny_args(tmp_path / "plain", epochs=2, defended=False))
    train_main(tiny_args(tmp_path / "defended", epochs=2))
    clean, plain, defended = (last_ckpt(tmp_path / n) for n in ("clean", "plain", "defended"))
    report = evaluate.main(["robust", "--clean", clean, "--runs", plain, defended, "--out", str(tmp_path / "report")])
    saved = json.loads((tmp_path / "report" / "robust_metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    # every run's model is a scorer of the one report format, which compare pairs user by user
    paired = compare_runs(tmp_path / "report" / "robust_metrics.json", tmp_path / "report" / "robust_metrics.json",
                          pairs=[("clean", "random (budget 0.05) undefended")])
    assert paired["scorers"]["clean (A) vs random (budget 0.05) undefended (B)"]["users"] == report["users"] == 200
    entry = report["attacks"]["random (budget 0.05)"]  # the kind and every non-default option
    assert entry["fakes"] == 10 and len(entry["targets"]) == 5
    assert {"undefended", "defended", "detection"} <= set(entry)
    assert set(entry["detection"]) == {"lm", "calibrated"}
    assert 0 <= entry["detection"]["calibrated"]["auc"] <= 1
    # The report's numbers are the evaluator's, on the clean test split.
    dm = clean_datamodule(json.loads(json.dumps(_data_hp(plain))))
    direct = target_metrics(RetrievalModule.from_checkpoint(plain).eval(), dm.test_dataloader(), dm.data,
                            np.array(entry["targets"]), 50)
    assert entry["undefended"]["t_hr@50"] == pytest.approx(direct["t_hr@50"])
    first = target_metrics(RetrievalModule.from_checkpoint(plain).eval(), dm.test_dataloader(), dm.data,
                           np.array(entry["targets"][:1]), 50)
    assert entry["per_target"]["undefended"][0] == pytest.approx(first["t_hr@50"])
    assert {k: len(v) for k, v in entry["per_target"].items()} == {"clean": 5, "undefended": 5, "defended": 5}
    weights = entry["weights"]
    assert len(weights["fake"]) == len(weights["real"]) == 11 and weights["real"] == sorted(weights["real"])
    assert entry["weights_over_updates"] and {"weight_fake", "weight_real"} <= set(entry["weights_over_updates"][-1])
    md = (tmp_path / "report" / "robust_report.md").read_text()
    for plot in ("robust_weights.png", "robust_targets.png"):
        assert f"]({plot})" in md and (tmp_path / "report" / plot).read_bytes()[:4] == b"\x89PNG"
    row = next(line for line in md.splitlines() if line.startswith("| random (budget 0.05) |")).split(" | ")
    base, hit = report["clean_metrics"]["random (budget 0.05)"]["t_hr@50"], entry["undefended"]["t_hr@50"]
    pairs = report["clean_metrics"]["random (budget 0.05)"]["pairs"]
    assert row[2:4] == [f"{base:.4f} ({round(base * pairs)} hits)", f"{hit:.4f}"]
    assert row[4] == (f"{hit / base:.1f}x" if base else ("inf" if hit else "–"))  # the attack's lift
    d = entry["defended"]["t_hr@50"]
    assert row[9] == (f"{d / hit - 1:+.0%}" if hit else "–")  # defended vs undefended
    real = entry["real_weights"]
    assert real["users"] == 200 and 0 <= real["below_0.5"] <= real["below_0.9"] <= 200
    assert real["min"] <= real["mean"] and f"| random (budget 0.05) (defended) | {entry['defended']['hr@10']:.4f}" in md
    with pytest.raises(ValueError, match="none of --runs holds an attack or a defence"):
        evaluate.main(["robust", "--clean", clean, "--runs", clean, "--out", str(tmp_path / "r2")])
    # two undefended runs of one attack would share a row: an error naming both, not an overwrite
    with pytest.raises(ValueError, match=r"two undefended runs of the attack 'random \(budget 0.05\)'.*plain"):
        evaluate.main(["robust", "--clean", clean, "--runs", plain, plain, "--out", str(tmp_path / "r3")])


def test_the_price_of_the_defence_on_clean_data_is_reported(tmp_path):
    """A defended run without an attack: its clean metrics and how many real users it down-weighted,
    read from the callback's final weights."""
    train_main(tiny_args(tmp_path / "clean", epochs=2, attack=None, defended=False))
    train_main(tiny_args(tmp_path / "price", epochs=3, attack=None, update={"lr": 50.0}))
    clean, price = last_ckpt(tmp_path / "clean"), last_ckpt(tmp_path / "price")
    report = evaluate.main(["robust", "--clean", clean, "--runs", price, "--out", str(tmp_path / "report")])
    assert report["attacks"] == {}
    (entry,) = report["defended_without_attack"]
    import torch

    state = torch.load(price, weights_only=False)["callbacks"]
    state = next(v for k, v in state.items() if "FraudsterReweighting" in k)
    w = (torch.sigmoid(torch.as_tensor(state["w"]).float()) / torch.sigmoid(torch.tensor(float(state["w0"]))))[:200]
    assert entry["real_weights"]["below_0.5"] == int((w < 0.5).sum()) > 0  # lr 50: the flagged users lose weight
    assert entry["real_weights"]["mean"] == pytest.approx(float(w.mean()))
    md = (tmp_path / "report" / "robust_report.md").read_text()
    assert f"| no attack (defended) | {entry['hr@10']:.4f}" in md


def test_robust_report_root_overrides_the_checkpoints_data_folder(tmp_path, monkeypatch):
    import genrec.robust.report as report

    seen = []

    def stop(data_hp):
        seen.append(data_hp)
        raise RuntimeError("stop here")

    monkeypatch.setattr(report, "describe", lambda path: {
        "path": path, "attack": None if path == "c.ckpt" else "random", "attack_config": {"kind": "random"}, "targets": [1],
        "num_fakes": 0 if path == "c.ckpt" else 1, "defence": None, "data": {"dataset": "ml-1m", "root": "../rel/ml-1m"}})
    monkeypatch.setattr(report, "clean_datamodule", stop)
    for argv, root in ((["--root", "/abs/ml-1m"], "/abs/ml-1m"), ([], "../rel/ml-1m")):
        with pytest.raises(RuntimeError, match="stop here"):
            evaluate.main(["robust", "--clean", "c.ckpt", "--runs", "a.ckpt", "--out", str(tmp_path), *argv])
        assert seen.pop()["root"] == root


def test_attack_labels_name_every_option_that_differs_from_the_default():
    from genrec.robust.attacks import AttackConfig

    def attack_label(options):  # through the plain dict, as a report reads it from a checkpoint
        return AttackConfig.from_dict(AttackConfig.from_dict(options).to_dict()).label()

    assert attack_label({"kind": "bandwagon", "seed": 3, "targets": [1, 2]}) == "bandwagon"
    label = attack_label({"kind": "bandwagon", "popular_fraction": 0.1, "target_repeats": 4})
    assert label == "bandwagon (target_repeats 4, popular_fraction 0.1)"
    assert attack_label({"kind": "model", "candidates": 8}) == "model (candidates 8)"


def _data_hp(path):
    import torch

    return dict(torch.load(path, weights_only=False)["datamodule_hyper_parameters"])


def test_an_attacked_or_defended_clean_reference_is_refused(tmp_path):
    """An attacked checkpoint as --clean would be its own reference (a lift of 1.0x): refused, in a real process."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    train_main(tiny_args(tmp_path / "plain", epochs=1, defended=False))
    plain = last_ckpt(tmp_path / "plain")
    proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "robust", "--clean", plain, "--runs", plain,
                           "--out", str(tmp_path / "report")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and not (tmp_path / "report").exists()
    assert f"--clean {plain} holds an attack (random (budget 0.05), 10 fake users)" in proc.stderr


def info(path, attack=None, defence=None, **data):
    config = None if attack is None else {"kind": "random", "budget": 0.05, "seed": 1, "targets": [3, 4], **attack}
    return {"path": path, "attack": None if attack is None else "random (budget 0.05)", "attack_config": config,
            "num_fakes": 0 if attack is None else 10, "defence": defence,
            "data": {"dataset": "synthetic", "max_seq_len": 12, "exclude": "history", **data}}


def test_every_input_s_attack_state_and_data_settings_are_checked():
    from genrec.robust.report import check_inputs

    clean = info("clean.ckpt")
    check_inputs(clean, [info("u.ckpt", {}), info("d.ckpt", {}, defence={"w": []})])
    with pytest.raises(ValueError, match="--clean d.ckpt holds FraudsterReweighting state"):
        check_inputs(info("d.ckpt", defence={"w": []}), [info("u.ckpt", {})])
    # the same targets from another seed: other fake profiles, so not one attack's two sides
    with pytest.raises(ValueError, match=r"hold different attacks \(attack.seed 1 vs 2; u.ckpt and d.ckpt\)"):
        check_inputs(clean, [info("u.ckpt", {}), info("d.ckpt", {"seed": 2}, defence={"w": []})])
    with pytest.raises(ValueError, match=r"u.ckpt was trained with data.exclude 'none', the clean run clean.ckpt with 'history'"):
        check_inputs(clean, [info("u.ckpt", {}, exclude="none")])


def test_robust_keeps_report_files_it_did_not_write(tmp_path):
    (tmp_path / "robust_report.md").write_text("my notes")
    with pytest.raises(FileExistsError, match="robust_report.md exists and was not written by genrec"):
        evaluate.main(["robust", "--clean", "c.ckpt", "--runs", "a.ckpt", "--out", str(tmp_path)])
    assert (tmp_path / "robust_report.md").read_text() == "my notes"
