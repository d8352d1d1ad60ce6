"""train.py / evaluate.py end to end on a tiny synthetic dataset."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from genrec.cli import main as train_main
from genrec.modules.checkpoints import CheckpointMismatchError
from tests.conftest import REPO

import evaluate


def tiny_args(tmp_path, net="genrec.models.HSTU", users=120, seed=0, epochs=1, extra=()):
    return [
        "fit",
        "--seed_everything", "0",
        "--trainer.max_epochs", str(epochs),
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1",
        "--data", "genrec.data.SequenceDataModule",
        "--data.dataset", "synthetic",
        "--data.dataset_options", json.dumps({"num_users": users, "num_items": 80, "seed": seed}),
        "--data.max_seq_len", "12",
        "--data.loader.batch_size", "32",
        "--model", "genrec.modules.RetrievalModule",
        "--model.net", net,
        "--model.net.dim", "16",
        "--model.net.max_seq_len", "12",
        "--model.loss.num_negatives", "16",
        *extra,
    ]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ is written relative to the working directory


def run_dir(tmp_path):
    return next((tmp_path / "runs").glob("*/version_0"))


def test_fit_logs_metrics_saves_config_and_checkpoints(tmp_path):
    cli = train_main(tiny_args(tmp_path))
    assert "val/hr@10" in cli.trainer.callback_metrics
    assert "val/ndcg@10" in cli.trainer.callback_metrics
    run = run_dir(tmp_path)
    assert (run / "config.yaml").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    logged = (run / "metrics.csv").read_text()
    assert "train/loss" in logged and "time/train_epoch_s" in logged and "time/val_s" in logged


def test_evaluate_writes_json_and_markdown_with_popularity(tmp_path):
    train_main(tiny_args(tmp_path, net="genrec.models.SASRec"))
    ckpt = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    report = evaluate.main(["model", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval")])
    saved = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
    assert saved["metrics"]["model"]["hr@10"] == pytest.approx(report["metrics"]["model"]["hr@10"])
    assert set(saved["metrics"]) == {"model", "popularity"}
    md = (tmp_path / "eval" / "test_report.md").read_text()
    assert "| popularity |" in md and "| model |" in md
    assert "percentile bootstrap over users (1,000 resamples" in md
    assert "## Breakdown" in md and "![hr@10 by group](test_breakdown.png)" in md and "| Q1 (" in md
    assert (tmp_path / "eval" / "test_breakdown.png").read_bytes()[:4] == b"\x89PNG"
    per_user = pd.read_parquet(tmp_path / "eval" / "test_per_user.parquet")
    assert len(per_user) == 2 * saved["users"] and set(per_user["scorer"]) == {"model", "popularity"}
    for scorer, rows in per_user.groupby("scorer"):
        assert rows["user"].is_unique and (rows["history"] >= 2).all()
        for key, value in saved["metrics"][scorer].items():
            assert rows[key].mean() == pytest.approx(value, abs=1e-9)
            low, high = saved["ci"][scorer][key]
            assert low <= value <= high and (high > low or value in (0.0, 1.0))
    # the same checkpoint evaluated again (another seed) compares as no difference at all
    evaluate.main(["model", "--ckpt", str(ckpt), "--out", str(tmp_path / "again"), "--no-baseline", "--seed", "1"])
    same = evaluate.main(["compare", str(tmp_path / "eval"), str(tmp_path / "again")])["scorers"]["model"]
    assert same["users"] == saved["users"] and all(m["diff"] == 0 and m["p"] == 1 for m in same["metrics"].values())


@pytest.mark.slow
def test_evaluate_logs_tables_plots_and_examples_to_wandb_offline(tmp_path):
    # its own process, as users run it: W&B reads WANDB_MODE once per process
    train_main(tiny_args(tmp_path, net="genrec.models.SASRec"))
    ckpt = str(run_dir(tmp_path) / "checkpoints" / "last.ckpt")
    subprocess.run([sys.executable, str(REPO / "evaluate.py"), "model", "--ckpt", ckpt, "--out", str(tmp_path / "on"), "--wandb",
                    "--bootstrap", "100"], cwd=tmp_path, env={**os.environ, "WANDB_MODE": "offline"}, check=True,
                   capture_output=True, timeout=300)
    files = next((tmp_path / "on" / "wandb").glob("offline-run-*")) / "files" / "media"
    tables = {p.name.split("_")[0] for p in (files / "table" / "test").glob("*.table.json")}
    assert tables == {"metrics", "breakdown", "examples"} and list((files / "images" / "test").glob("breakdown_*.png"))
    examples = json.loads(next((files / "table" / "test").glob("examples_*.table.json")).read_text())
    assert {"user_id", "position", "item_id", "score", "title", "is_target"} <= set(examples["columns"])
    assert len(examples["data"]) == 5 * 10


def test_evaluate_with_wandb_disabled_writes_the_report_and_no_run(tmp_path, monkeypatch):
    train_main(tiny_args(tmp_path, net="genrec.models.SASRec"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report = evaluate.main(["model", "--ckpt", str(run_dir(tmp_path) / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "off"),
                            "--wandb", "--bootstrap", "100"])
    assert report["ci"] and (tmp_path / "off" / "test_report.md").exists()
    assert not list((tmp_path / "off").glob("wandb/*run-*"))


def test_evaluate_equals_trainer_test(tmp_path):
    cli = train_main(tiny_args(tmp_path))
    ckpt = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt), verbose=False)[0]
    report = evaluate.main(["model", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval"), "--no-baseline"])
    for key, value in report["metrics"]["model"].items():
        assert tested[f"test/{key}"] == pytest.approx(value, abs=1e-6)


def test_checkpoint_from_another_dataset_is_refused(tmp_path):
    train_main(tiny_args(tmp_path))
    ckpt = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    other = json.dumps({"num_users": 120, "num_items": 90, "seed": 0})
    with pytest.raises(CheckpointMismatchError, match="trained on catalogue"):
        evaluate.main(["model", "--ckpt", str(ckpt), "--data.dataset_options", other])


def test_test_subcommand_refuses_checkpoint_of_other_dataset(tmp_path):
    train_main(tiny_args(tmp_path))
    ckpt = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    args = tiny_args(tmp_path / "b", seed=5)
    args[0] = "test"
    i = args.index("--trainer.max_epochs")
    del args[i:i + 2]
    args[args.index("--data.dataset_options") + 1] = json.dumps({"num_users": 120, "num_items": 90, "seed": 0})
    with pytest.raises(CheckpointMismatchError, match="trained on catalogue"):
        train_main(args + ["--ckpt_path", str(ckpt)])


def test_corrupt_checkpoint_gets_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointMismatchError, match="cannot be read"):
        evaluate.main(["model", "--ckpt", str(bad)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate.main(["model", "--ckpt", str(tmp_path / "missing.ckpt")])


def test_unknown_data_override_is_named(tmp_path, capsys):
    train_main(tiny_args(tmp_path))
    ckpt = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit):  # no data module has it
        evaluate.main(["model", "--ckpt", str(ckpt), "--data.max_len", "3"])
    assert "unrecognized arguments: --data.max_len 3" in capsys.readouterr().err
    # another data module's option, not this checkpoint's
    with pytest.raises(ValueError, match="bad data option for SequenceDataModule: .*'eval_on'"):
        evaluate.main(["model", "--ckpt", str(ckpt), "--data.eval_on", "[beauty]"])


def test_training_survives_a_broken_wandb(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setattr(wandb, "run", None)
    with pytest.warns(UserWarning, match="W&B logging failed"):
        cli = train_main(tiny_args(tmp_path))
    assert cli.trainer.current_epoch == 1
    assert "val/ndcg@10" in (run_dir(tmp_path) / "metrics.csv").read_text()


def test_run_folder_resolves_to_the_best_checkpoint(tmp_path):
    train_main(tiny_args(tmp_path, epochs=2))
    run = run_dir(tmp_path)
    report = evaluate.main(["model", "--ckpt", str(run), "--out", str(tmp_path / "eval"), "--no-baseline"])
    assert report["checkpoint"].endswith(".ckpt") and "last" not in report["checkpoint"]
    assert "epoch" in report["checkpoint"]


def test_the_state_at_the_end_of_training_is_saved_even_without_an_improvement(tmp_path):
    # validation only at epoch 1 of 3: no checkpoint is due after epochs 2 and 3, yet final.ckpt
    # holds the weights the run ended with
    cli = train_main(tiny_args(tmp_path, epochs=3, extra=["--trainer.check_val_every_n_epoch", "2"]))
    final = run_dir(tmp_path) / "checkpoints" / "final.ckpt"
    from genrec.modules.checkpoints import load_checkpoint

    ckpt = load_checkpoint(final)
    assert ckpt["global_step"] == cli.trainer.global_step and ckpt["epoch"] == 3  # all 3 epochs done
    for name, value in cli.model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][name], value), name


def test_a_stale_mid_epoch_last_checkpoint_does_not_hide_the_best(tmp_path):
    # What a run with the mid-epoch saver leaves: last.ckpt written mid-epoch 58 still names the
    # epoch-54 best, which epoch 59 replaced on disk; last-v1.ckpt (after epoch 59's validation)
    # names the real best. The newest record wins; a missing best is an error, not last.ckpt.
    from genrec.modules.checkpoints import resolve_checkpoint

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)

    def save(name, step, best):
        state = {"ModelCheckpoint{'monitor': 'val/ndcg@10'}": {"best_model_path": str(folder / best)},
                 "ModelCheckpoint{'monitor': None}": {"best_model_path": ""}}
        torch.save({"state_dict": {}, "hyper_parameters": {}, "global_step": step, "callbacks": state}, folder / name)

    save("last.ckpt", 4000, "epoch054.ckpt")
    save("last-v1.ckpt", 4080, "epoch059.ckpt")
    save("epoch059.ckpt", 4080, "epoch059.ckpt")
    assert resolve_checkpoint(tmp_path / "run") == folder / "epoch059.ckpt"
    (folder / "epoch059.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="epoch059.ckpt, is missing"):
        resolve_checkpoint(tmp_path / "run")


def test_train_py_resumes_an_old_format_checkpoint_at_the_uninterrupted_runs_rates(tmp_path):
    """``train.py fit --ckpt_path old.ckpt`` on a checkpoint of the old format (flat hyper-parameters,
    genrec's hand-written LambdaLR schedule) goes on with the rate the uninterrupted run took at every
    later step."""
    from genrec.modules.checkpoints import VERSION_KEY
    from tests.modules.test_optim import reference_factor

    schedule = ["--model.optim.lr", "0.01", "--model.optim.lr_schedule", "cosine", "--model.optim.warmup_steps", "3",
                "--model.optim.min_lr_ratio", "0.1", "--trainer.callbacks+=tests.modules.test_optim.Rates"]
    saver = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.dirpath", str(tmp_path / "every"),
             "--trainer.callbacks.filename", "{epoch}", "--trainer.callbacks.save_top_k", "-1"]
    rates = lambda cli: next(c for c in cli.trainer.callbacks if type(c).__name__ == "Rates").lrs  # noqa: E731
    whole = rates(train_main(tiny_args(tmp_path, epochs=2, extra=[*schedule, *saver])))
    total, step = len(whole), len(whole) // 2
    ckpt = torch.load(tmp_path / "every" / "epoch=0.ckpt", weights_only=False)
    hp = ckpt["hyper_parameters"]
    hp.update(hp.pop("optim"))  # the retrieval module's flat spelling
    hp.update({"loss": hp["loss"].pop("kind"), **hp.pop("loss")})
    rate = 0.01 * reference_factor(step, total, "cosine", 3, 0.1)
    ckpt["lr_schedulers"] = [{"base_lrs": [0.01], "last_epoch": step, "_step_count": step + 1, "verbose": False,
                              "_get_lr_called_within_step": False, "_last_lr": [rate], "lr_lambdas": [None]}]
    ckpt["optimizer_states"][0]["param_groups"][0]["lr"] = rate
    del ckpt[VERSION_KEY]
    torch.save(ckpt, tmp_path / "old.ckpt")
    resumed = rates(train_main(tiny_args(tmp_path, epochs=2, extra=[*schedule, "--ckpt_path", str(tmp_path / "old.ckpt")])))
    assert resumed == pytest.approx(whole[step:], rel=1e-12)
