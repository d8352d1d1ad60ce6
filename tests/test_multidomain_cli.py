"""train.py / evaluate.py with a multi-domain data module (two tiny synthetic domains)."""
import json

import pytest

import evaluate
from genrec.cli import main as train_main

DOMAINS = [
    {"name": "a", "dataset": "synthetic", "dataset_options": {"num_users": 80, "num_items": 40, "num_interests": 5, "seed": 1}},
    {"name": "b", "dataset": "synthetic", "dataset_options": {"num_users": 60, "num_items": 30, "num_interests": 5, "seed": 2}},
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_train_and_evaluate_each_domain_within_its_catalogue(tmp_path):
    cli = train_main([
        "fit", "--seed_everything", "0", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--data", "genrec.data.MultiDomainDataModule", "--data.domains", json.dumps(DOMAINS),
        "--data.max_seq_len", "10", "--data.loader.batch_size", "32",
        "--model", "genrec.modules.RetrievalModule", "--model.net", "genrec.models.SASRec",
        "--model.net.dim", "16", "--model.net.max_seq_len", "10", "--model.loss.num_negatives", "16",
    ])
    assert cli.model.hparams.num_items == 70  # one joint id space
    logged = cli.trainer.callback_metrics
    assert {"val/ndcg@10", "val/a/ndcg@10", "val/b/ndcg@10"} <= set(logged)
    run = next((tmp_path / "runs").glob("*/version_0"))
    report = evaluate.main(["model", "--ckpt", str(run), "--out", str(tmp_path / "eval")])
    assert set(report["metrics"]) == {"model [a]", "popularity [a]", "model [b]", "popularity [b]"}
    md = (tmp_path / "eval" / "test_report.md").read_text()
    assert "HR@10 ratio model / popularity [b]" in md
    # the checkpoint's catalogue is the joint one: evaluating on domain b alone is refused, by name
    with pytest.raises(Exception, match="trained on catalogue"):
        evaluate.main(["model", "--ckpt", str(run), "--out", str(tmp_path / "eval-b"), "--data.class_path",
                       "genrec.data.SequenceDataModule", "--data.dataset", "synthetic",
                       "--data.dataset_options", json.dumps(DOMAINS[1]["dataset_options"])])
