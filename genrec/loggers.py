"""Loggers that never take training down with them, and run folders that no two runs share."""
from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only


class _Disabled:
    """Stands in for a W&B run after a failure: every attribute is a no-op."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _guard(method):
    @functools.wraps(method)
    def wrapper(self: "SafeWandbLogger", *args: Any, **kwargs: Any) -> Any:
        if self._failed:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # any W&B failure (network, key, service) must not stop training
            self._fail(err)
            return None

    return wrapper


class SafeWandbLogger(WandbLogger):
    """``WandbLogger`` that is offline unless ``WANDB_MODE`` or ``offline=False`` say otherwise, and on any
    W&B error warns once and goes quiet."""

    def __init__(self, *args: Any, offline: bool | None = None, **kwargs: Any):
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") in ("offline", "dryrun")
        self._failed = False
        super().__init__(*args, offline=offline, **kwargs)

    def _fail(self, err: Exception) -> None:
        self._failed = True
        warnings.warn(f"W&B logging failed and is switched off for this run ({type(err).__name__}: {err}); "
                      "training goes on and the CSV logger keeps the metrics", stacklevel=3)

    @property
    def experiment(self) -> Any:
        if self._failed:
            return _Disabled()
        try:
            return super().experiment
        except Exception as err:
            self._fail(err)
            return _Disabled()

    log_metrics = _guard(WandbLogger.log_metrics)
    log_hyperparams = _guard(WandbLogger.log_hyperparams)
    after_save_checkpoint = _guard(WandbLogger.after_save_checkpoint)
    finalize = _guard(WandbLogger.finalize)
    watch = _guard(WandbLogger.watch)
    log_table = _guard(WandbLogger.log_table)
    log_image = _guard(WandbLogger.log_image)

    @_guard
    def finish(self) -> None:
        """End the run (an offline run is then complete on disk, ready for ``wandb sync``)."""
        if self._experiment is not None:
            self._experiment.finish()


VERSION_FOLDER = re.compile(r"version_(\d+)")


def claim_run_folder(root: str | Path) -> int:
    """The number N of a ``<root>/version_N`` folder this process has just created (``mkdir`` is atomic),
    so two runs started together never share one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m[1]) for d in root.iterdir() if (m := VERSION_FOLDER.fullmatch(d.name))]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def claim_run_folders(loggers: list[Logger]) -> None:
    """On global rank 0, give every logger that numbers its runs itself (CSV, TensorBoard) and has no
    explicit ``version`` a run folder claimed atomically."""
    if rank_zero_only.rank != 0:
        return
    for logger in loggers:
        if getattr(logger, "_version", "") is None and getattr(logger, "root_dir", None):
            logger._version = claim_run_folder(logger.root_dir)  # what Logger.version reads back
