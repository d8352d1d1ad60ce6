"""evaluate.py as users run it (real processes): protocols that must match, outputs never replaced silently."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from genrec.cli import main as train_main
from tests.conftest import REPO
from tests.test_cli import tiny_args

import evaluate


def evaluate_py(*args, cwd):
    """``python evaluate.py ARGS`` in its own process, importing this checkout's genrec."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_main(tiny_args(tmp_path, net="genrec.models.SASRec"))
    return next((tmp_path / "runs").glob("*/version_0"))


def test_compare_refuses_two_reports_of_the_same_weights_under_another_exclusion(tmp_path, run):
    ckpt = str(run / "checkpoints" / "last.ckpt")
    evaluate.main(["model", "--ckpt", ckpt, "--out", "history", "--no-baseline", "--bootstrap", "50"])
    evaluate.main(["model", "--ckpt", ckpt, "--out", "none", "--no-baseline", "--bootstrap", "50", "--data.exclude", "none"])
    proc = evaluate_py("compare", "history", "none", cwd=tmp_path)
    assert proc.returncode == 2 and "were evaluated with different exclude ('history' vs 'none')" in proc.stderr
    assert "Traceback" not in proc.stderr  # a user's mistake is a message, not a stack
    assert "| hr@" not in proc.stdout


def test_a_second_evaluation_never_replaces_the_report_of_another_protocol(tmp_path, run):
    first = evaluate_py("model", "--ckpt", str(run), "--no-baseline", "--bootstrap", "50", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (run / "test_metrics.json").read_text()
    assert json.loads(report)["command"] == "evaluate.py model"
    other = evaluate_py("model", "--ckpt", str(run), "--no-baseline", "--bootstrap", "50", "--data.exclude", "none", cwd=tmp_path)
    assert other.returncode != 0 and "differ in protocol.exclude ('history' vs 'none')" in other.stderr
    assert "--overwrite" in other.stderr and (run / "test_metrics.json").read_text() == report
    # the same protocol on the same checkpoint replaces its own report; --overwrite replaces anything
    again = evaluate.main(["model", "--ckpt", str(run), "--no-baseline", "--bootstrap", "50", "--seed", "1"])
    assert json.loads((run / "test_metrics.json").read_text())["ci_method"] == again["ci_method"]
    evaluate.main(["model", "--ckpt", str(run), "--no-baseline", "--bootstrap", "50", "--data.exclude", "none", "--overwrite"])
    assert json.loads((run / "test_metrics.json").read_text())["protocol"]["exclude"] == "none"
    (run / "test_report.md").write_text("my notes on this run")
    with pytest.raises(FileExistsError, match="test_report.md was changed since genrec wrote it"):
        evaluate.main(["model", "--ckpt", str(run), "--no-baseline", "--bootstrap", "50", "--data.exclude", "none"])


def test_recommend_keeps_unrelated_files_and_writes_the_format_its_suffix_names(tmp_path, run):
    (tmp_path / "recs.csv").write_text("user,notes\n1,mine\n")
    args = ["recommend", "--ckpt", str(run), "--k", "3", "--accelerator", "cpu"]
    refused = evaluate_py(*args, "--out", "recs.csv", cwd=tmp_path)
    assert refused.returncode != 0 and "recs.csv exists and was not written by genrec" in refused.stderr
    assert (tmp_path / "recs.csv").read_text() == "user,notes\n1,mine\n"
    evaluate.main([*args, "--out", "new.csv"])
    table = pd.read_csv(tmp_path / "new.csv")  # CSV text, not Parquet bytes
    assert (tmp_path / "new.csv").read_bytes()[:4] != b"PAR1" and list(table.columns[:3]) == ["user", "user_id", "position"]
    evaluate.main([*args, "--out", "new.csv"])  # its own file, same request: replaced
    with pytest.raises(FileExistsError, match=r"differ in k \(3 vs 5\)"):
        evaluate.main([*args[:3], "--k", "5", "--accelerator", "cpu", "--out", "new.csv"])
    with pytest.raises(ValueError, match="has the suffix of csv, but format is parquet"):
        evaluate.main([*args, "--out", "other.csv", "--format", "parquet"])
    evaluate.main([*args, "--out", "recs.csv", "--overwrite"])
    assert pd.read_csv(tmp_path / "recs.csv")["position"].max() == 3
    evaluate.main([*args, "--out", "recs.jsonl"])
    assert pd.read_json(tmp_path / "recs.jsonl", lines=True)["position"].max() == 3
