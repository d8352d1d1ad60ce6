"""Callbacks that keep training safe and exactly resumable (``genrec.cli`` adds them): whatever one decides
that changes training is computed identically on every rank, or reduced across ranks before it is acted on.
"""
from __future__ import annotations

import os
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


class NonFiniteLossGuard(L.Callback):
    """Never let a non-finite loss or gradient reach the optimizer (under fp16, the GradScaler checks gradients).

    Args:
        action: ``stop`` raises ``NonFiniteLossError`` naming the epoch, batch, step and users; ``skip``
            drops that optimizer step and warns.
        max_skips: with ``skip``, stop anyway after this many skipped steps in one run.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_skips: int = 10):
        if action not in ("stop", "skip"):
            raise ValueError(f"NonFiniteLossGuard action must be 'stop' or 'skip', got {action!r}")
        if max_skips < 0:
            raise ValueError(f"NonFiniteLossGuard max_skips must be >= 0, got {max_skips}")
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0
        self._bad: list[str] = []  # descriptions of this step's non-finite losses on this rank
        self._where = ""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        users = batch.get("user") if isinstance(batch, dict) else None
        shown = "" if users is None else f", users {users[:8].tolist()}{' ...' if len(users) > 8 else ''}"
        self._where = f"epoch {trainer.current_epoch}, batch {batch_idx}{shown}"

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._bad.append(f"loss {loss.detach().float().flatten()[0].item()} at {self._where}")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        local = list(self._bad)
        self._bad.clear()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if params and scaler is None:
            # a NaN or inf makes its tensor's sum non-finite: cheaper than isfinite().all() per tensor on CPU
            sums = torch.stack([p.grad.detach().sum(dtype=torch.float32) for p in params])
            if not torch.isfinite(sums).all():
                local.append(f"non-finite gradient after {self._where}")
        if not trainer.strategy.reduce_boolean_decision(bool(local), all=False):
            return
        step = trainer.global_step
        what = "; ".join(local) if local else "a non-finite loss or gradient on another rank"
        rank = f" (rank {trainer.global_rank})" if trainer.world_size > 1 else ""
        if self.action == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            for p in params:
                p.grad = None  # optimizers leave parameters without gradients untouched
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
            rank_zero_warn(f"skipped optimizer step {step}{rank}: {what} ({self.skipped} skipped so far)")
            return
        if self.action == "skip":
            raise NonFiniteLossError(
                f"non-finite loss at global step {step}{rank}: {what}; {self.skipped} steps were skipped already "
                f"(max_skips={self.max_skips}), so training is diverging: lower model.optim.lr or check the data"
            )
        raise NonFiniteLossError(
            f"non-finite loss at global step {step}{rank}: {what}. Nothing was updated with it. Lower model.optim.lr, "
            "check the data of that batch, or add genrec.callbacks.NonFiniteLossGuard with action: skip to "
            "trainer.callbacks to drop such steps"
        )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = state["skipped"]


class RankStepSeed(L.Callback):
    """Seed torch before each training batch from ``(seed, global rank, epoch, batch index)``, so DDP ranks
    draw differently and a resumed run draws as the uninterrupted one; ``seed`` defaults to ``seed_everything``'s."""

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.seed is None:
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))

    def batch_seed(self, rank: int, epoch: int, batch_idx: int) -> int:
        # SeedSequence mixes the fields so that neighbouring batches get unrelated streams.
        return int(np.random.SeedSequence([self.seed or 0, rank, epoch, batch_idx]).generate_state(1, np.uint64)[0] >> 1)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(self.batch_seed(trainer.global_rank, trainer.current_epoch, batch_idx))

    def state_dict(self) -> dict[str, int | None]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self.seed = state["seed"]


class WandbRunId(L.Callback):
    """Keeps the W&B run id in every checkpoint (``wandb_run_id``), so a resumed run continues it."""

    KEY = "wandb_run_id"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        found = run_id(trainer)
        if found is not None:
            checkpoint[self.KEY] = found


def run_id(trainer: L.Trainer) -> str | None:
    """The id of the W&B run this trainer logs to, if it has a working one."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and not getattr(logger, "_failed", False):
            experiment = getattr(logger, "_experiment", None)
            found = getattr(experiment, "id", None)
            if isinstance(found, str) and found:
                return found
    return None


class FinalCheckpoint(L.Callback):
    """Saves ``final.ckpt`` when training ends, and ``last-sigterm.ckpt`` (which ``--ckpt_path last``
    resumes from) when a SIGTERM stops it."""

    SIGTERM_NAME = "last-sigterm.ckpt"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(os.path.join(checkpoint_folder(trainer), "final.ckpt"))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit" and not trainer.fast_dev_run:
            trainer.save_checkpoint(os.path.join(checkpoint_folder(trainer), self.SIGTERM_NAME))


def checkpoint_folder(trainer: L.Trainer) -> str:
    """Where the run's ``ModelCheckpoint`` writes, else ``<log_dir>/checkpoints``."""
    dirpath = next((cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)), None)
    return dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")
