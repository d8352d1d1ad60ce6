"""Kill-and-resume through ``train.py`` with the callbacks users actually get: the defaults (quickstart) and those
of every config in ``configs/``, stopped mid-epoch by SIGTERM and after a checkpoint written at a validation end.

Each case ends with the weights of an uninterrupted run. ``test_every_shipped_callback_is_resumed_here`` keeps the
cases complete: a callback class added to a config or to the CLI's defaults without a case here fails it.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml

from genrec.cli import DEFAULT_CALLBACKS, REQUIRED_CALLBACKS
from genrec.cli import main as train_main
from tests.helpers import REPO
from tests.test_resume import paused_run, stop

pytestmark = pytest.mark.slow

SYNTHETIC = json.dumps({"num_users": 200, "num_items": 80, "seed": 0})
# 200 users in batches of 16, 11 of the 13 steps an epoch (a limit is what makes Lightning re-enter a
# checkpoint written at a validation end as an unfinished epoch), validation after each, 3 epochs.
TINY = ["--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.limit_train_batches", "11",
        "--data.dataset_options", SYNTHETIC, "--data.max_seq_len", "12", "--data.loader.batch_size", "16",
        "--seed_everything", "0"]


def quickstart_args(tmp_path: Path) -> list[str]:
    """configs/quickstart.yaml as written (default callbacks and loggers, progress bar on), on a smaller synthetic set."""
    return ["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), *TINY,
            "--model.net.init_args.max_seq_len", "12", "--model.loss.num_negatives", "16"]


def defence_args(tmp_path: Path) -> list[str]:
    """An attacked SASRec run with configs/robust/defence.yaml's callbacks as written (MiniLM user text, calibrator,
    coordination signal); its first weight update falls in epoch 2, after the interruptions."""
    return ["fit", "--config", str(REPO / "configs" / "robust" / "sasrec-ml-100k.yaml"),
            "--config", str(REPO / "configs" / "robust" / "defence.yaml"), *TINY,
            "--data.dataset", "synthetic", "--data.root", "null", "--data.attack",
            json.dumps({"kind": "random", "budget": 0.05, "seed": 1}),
            "--model.net.init_args.dim", "16", "--model.net.init_args.max_seq_len", "12",
            "--model.loss.num_negatives", "16", "--trainer.enable_progress_bar", "false"]


def tokenizer_args(tmp_path: Path) -> list[str]:
    """configs/tokenizer/scientific.yaml's callbacks (best by val/loss) on the synthetic catalogue's item text."""
    return ["fit", "--config", str(REPO / "configs" / "tokenizer" / "scientific.yaml"),
            "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "1", "--seed_everything", "0",
            "--data.datasets", json.dumps([{"dataset": "synthetic", "dataset_options": json.loads(SYNTHETIC)}]),
            "--data.batch_size", "6", "--data.val_fraction", "0.1", "--model.hidden_dim", "16",
            "--trainer.limit_train_batches", "11",
            "--trainer.enable_progress_bar", "false"]


CASES = {"quickstart": quickstart_args, "defence": defence_args, "tokenizer": tokenizer_args}


def config_callbacks(path: Path) -> list[str]:
    """The callback classes a run of this config gets: its own list, else the CLI's defaults; plus the required ones."""
    trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
    given = trainer.get("callbacks")
    entries = DEFAULT_CALLBACKS if given is None else given
    return [e["class_path"] if isinstance(e, dict) else e for e in entries] + list(REQUIRED_CALLBACKS)


def test_every_shipped_callback_is_resumed_here():
    shipped = {cls for path in (REPO / "configs").rglob("*.yaml") for cls in config_callbacks(path)}
    covered = {"quickstart": config_callbacks(REPO / "configs" / "quickstart.yaml"),
               "defence": config_callbacks(REPO / "configs" / "robust" / "defence.yaml"),
               "tokenizer": config_callbacks(REPO / "configs" / "tokenizer" / "scientific.yaml")}
    missing = shipped - {cls for classes in covered.values() for cls in classes}
    assert not missing, f"callbacks shipped in configs/ without a kill-and-resume case in {__file__}: {sorted(missing)}"


def final_weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name


_WHOLE: dict[str, dict[str, torch.Tensor]] = {}


def uninterrupted(case: str, tmp_path_factory, monkeypatch) -> dict[str, torch.Tensor]:
    """Final weights of the case's uninterrupted run (trained once, shared by the tests of the case)."""
    if case not in _WHOLE:
        work = tmp_path_factory.mktemp(f"whole-{case}")
        with monkeypatch.context() as m:
            m.chdir(work)
            _WHOLE[case] = final_weights(train_main(CASES[case](work)))
    return _WHOLE[case]


@pytest.fixture
def wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigterm_mid_epoch_then_resume_with_the_configs_callbacks(case, tmp_path, tmp_path_factory, monkeypatch, wandb_offline):
    args = CASES[case](tmp_path)
    whole = uninterrupted(case, tmp_path_factory, monkeypatch)

    work = tmp_path / "signalled"
    work.mkdir()
    status, stderr = stop(paused_run(args, "PauseUntilSignalled", work, tmp_path / "waiting", "the signal"), signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, stderr[-4000:]

    monkeypatch.chdir(work)
    # and once more: a scheduler's retry after the resumed run finished goes on from its end, training nothing
    resumed = train_main(args + ["--ckpt_path", "last"])
    assert resumed.trainer.ckpt_path.endswith("last-sigterm.ckpt")
    assert_same_weights(whole, final_weights(resumed))
    again = train_main(args + ["--ckpt_path", "last"])
    assert_same_weights(whole, final_weights(again))


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_from_a_checkpoint_written_at_a_validation_end(case, tmp_path, tmp_path_factory, monkeypatch, wandb_offline):
    args = CASES[case](tmp_path)
    whole = uninterrupted(case, tmp_path_factory, monkeypatch)

    # Frozen before step 17 (epoch 1): the newest last.ckpt is the one written at epoch 0's validation end.
    work = tmp_path / "killed"
    work.mkdir()
    stop(paused_run(args, "PauseAt", work, tmp_path / "paused", "the kill"), signal.SIGKILL)
    last = next(work.rglob("last.ckpt"))
    saved = torch.load(last, weights_only=False, map_location="cpu")
    assert saved["epoch"] == 0 and saved["global_step"] > 0

    monkeypatch.chdir(work)
    resumed = train_main(args + ["--ckpt_path", str(last)])
    assert_same_weights(whole, final_weights(resumed))


def test_sigint_then_resume_from_the_last_checkpoint(tmp_path, tmp_path_factory, monkeypatch, wandb_offline):
    # Ctrl-C mid-epoch: Lightning shuts down without a checkpoint of that state; --ckpt_path last goes on
    # from the last one written (epoch 0's validation end) and must still end where an uninterrupted run ends.
    args = quickstart_args(tmp_path)
    whole = uninterrupted("quickstart", tmp_path_factory, monkeypatch)
    work = tmp_path / "interrupted"
    work.mkdir()
    status, stderr = stop(paused_run(args, "PauseAt", work, tmp_path / "paused", "the interrupt"), signal.SIGINT)
    assert status != 0, stderr[-4000:]
    monkeypatch.chdir(work)
    resumed = train_main(args + ["--ckpt_path", "last"])
    assert resumed.trainer.ckpt_path.endswith("last.ckpt")
    assert_same_weights(whole, final_weights(resumed))
