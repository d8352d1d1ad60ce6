"""Wall-clock timing of training and validation epochs, logged beside the metrics."""
from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Logs ``time/train_epoch_s`` (validation excluded) and ``time/val_s``.

    Validation runs inside Lightning's training epoch, so its duration is subtracted.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start = time.perf_counter()
        self._val_total = 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/train_epoch_s", time.perf_counter() - self._train_start - self._val_total)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - self._val_start
        self._val_total = getattr(self, "_val_total", 0.0) + elapsed
        pl_module.log("time/val_s", elapsed)
