import warnings

import pytest

from genrec.loggers import SafeWandbLogger


def test_wandb_failure_never_stops_logging(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setattr(wandb, "run", None)
    logger = SafeWandbLogger(save_dir=str(tmp_path), project="genrec", offline=False)
    with pytest.warns(UserWarning, match="W&B logging failed"):
        logger.log_metrics({"train/loss": 1.0}, step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then quiet
        logger.log_metrics({"train/loss": 0.5}, step=1)
        logger.log_hyperparams({"lr": 1e-3})
        logger.experiment.log({"x": 1})
        logger.finalize("success")


def test_offline_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert SafeWandbLogger(save_dir=str(tmp_path))._offline
    monkeypatch.setenv("WANDB_MODE", "online")
    assert not SafeWandbLogger(save_dir=str(tmp_path))._offline
