"""Wall-clock timing of training and validation epochs, logged beside the metrics."""
from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Logs ``time/train_epoch_s`` (validation excluded) and ``time/val_s``; no epoch time for an epoch
    entered by a resume mid-epoch."""

    def __init__(self) -> None:
        self._train_start: float | None = None
        self._val_start: float | None = None
        self._val_total = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start, self._val_start, self._val_total = None, None, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start = time.perf_counter()
        self._val_total = 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._train_start is not None:
            pl_module.log("time/train_epoch_s", time.perf_counter() - self._train_start - self._val_total)
        self._train_start = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._val_start is None:
            return
        elapsed = time.perf_counter() - self._val_start
        self._val_total += elapsed
        self._val_start = None
        pl_module.log("time/val_s", elapsed)
