"""The LightningCLI shared by ``train.py``: data ↔ model links, default loggers and callbacks."""
from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from genrec import loggers, resume
from genrec.modules.checkpoints import load_checkpoint

# RetrievalModule logs val/test metrics computed by torchmetrics from sums already reduced across
# ranks; Lightning cannot know that and suggests sync_dist=True, which would only average equal values.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/", category=PossibleUserWarning)

DEFAULT_CALLBACKS = [
    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
     "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True,
                   "filename": "epoch{epoch:03d}-ndcg10_{val/ndcg@10:.4f}", "auto_insert_metric_name": False}},
    # last.ckpt also mid-epoch, so a killed run loses at most this many steps (--ckpt_path last).
    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
     "init_args": {"save_top_k": 0, "save_last": True, "every_n_train_steps": 200}},
    {"class_path": "lightning.pytorch.callbacks.RichProgressBar"},
    {"class_path": "genrec.timing.EpochTimer"},
]

# Added to every run unless trainer.callbacks already has one (also when a config replaces the default
# callbacks, e.g. configs/robust/defence.yaml); when it has several, the last wins.
REQUIRED_CALLBACKS = ["genrec.callbacks.NonFiniteLossGuard", "genrec.callbacks.RankStepSeed",
                      "genrec.callbacks.WandbRunId", "genrec.callbacks.FinalCheckpoint"]


def default_loggers(save_dir: str = "runs", name: str = "genrec") -> list[dict]:
    # CSV first: checkpoints and config.yaml go to its folder, which exists whatever W&B does.
    return [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir, "name": name}},
        {"class_path": "genrec.loggers.SafeWandbLogger", "init_args": {"save_dir": save_dir, "project": name}},
    ]


class GenRecCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.link_arguments("data.fingerprint", "model.init_args.dataset_fingerprint", apply_on="instantiate")
        parser.set_defaults({"trainer.logger": default_loggers(), "trainer.callbacks": DEFAULT_CALLBACKS})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        # The default rich progress bar must not clash with enable_progress_bar=false.
        if trainer.enable_progress_bar is False and trainer.callbacks:
            trainer.callbacks = [c for c in trainer.callbacks if "ProgressBar" not in str(getattr(c, "class_path", c))]
        trainer.callbacks = with_required_callbacks(trainer.callbacks)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # before any callback or logger writes into the run folder
        loggers.claim_run_folders(self.trainer.loggers)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        # before LightningCLI reads the checkpoint's hyper-parameters: resolve "last", refuse a damaged checkpoint
        subcommand = self.config.get("subcommand")
        if subcommand:
            resume.prepare(self.config[subcommand], subcommand)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's own step, the checkpoint's model hyper-parameters becoming the model's config,
        on the checkpoint in today's format (``checkpoints.migrate``): an older one resumes too."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(load_checkpoint(ckpt_path, mmap=True)["hyper_parameters"])
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)


def with_required_callbacks(callbacks: list | None) -> list:
    """``callbacks`` (config entries) with one of each ``REQUIRED_CALLBACKS``: the last given, else a default."""
    callbacks = list(callbacks or [])
    for path in REQUIRED_CALLBACKS:
        found = [i for i, c in enumerate(callbacks) if getattr(c, "class_path", None) == path]
        if not found:
            callbacks.append(Namespace(class_path=path, init_args=Namespace()))
        for i in reversed(found[:-1]):
            del callbacks[i]
    return callbacks


def main(args: list[str] | None = None) -> GenRecCLI:
    from genrec.data import SequenceDataModule  # noqa: F401  (registers datasets)
    import lightning as L

    try:
        return GenRecCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         args=args, save_config_kwargs={"overwrite": True})
    except SIGTERMException:
        # Lightning's SIGTERMException exits with status 0, as if finished: report a SIGTERM death instead
        raise SystemExit(128 + signal.SIGTERM) from None
