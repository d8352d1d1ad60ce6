"""A resumed run continues the W&B run of the checkpoint (offline W&B, as in the default setup)."""
import pytest
import torch

from genrec.cli import main as train_main
from tests.test_cli import tiny_args


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.finish()  # a run left by another test would otherwise be reused whatever the id
    wandb.teardown()  # and its process-wide settings (e.g. WANDB_MODE=disabled) with it
    yield wandb
    wandb.finish()
    wandb.teardown()


def wandb_logger(cli):
    return next(lg for lg in cli.trainer.loggers if type(lg).__name__ == "SafeWandbLogger")


def test_resumed_run_continues_the_same_wandb_run(tmp_path, offline_wandb):
    first = train_main(tiny_args(tmp_path, epochs=1))
    run_id = wandb_logger(first).experiment.id
    ckpt = torch.load(tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["wandb_run_id"] == run_id
    offline_wandb.finish()  # what the end of the first process does

    resumed = train_main(tiny_args(tmp_path, epochs=2) + ["--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 2
    assert wandb_logger(resumed).experiment.id == run_id
    runs = sorted(p.name for p in (tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(run_id) for name in runs)


def test_a_fresh_run_gets_a_new_wandb_run(tmp_path, offline_wandb):
    first = train_main(tiny_args(tmp_path, epochs=1))
    run_id = wandb_logger(first).experiment.id
    offline_wandb.finish()
    second = train_main(tiny_args(tmp_path, epochs=1))
    assert wandb_logger(second).experiment.id != run_id
