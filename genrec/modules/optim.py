"""AdamW with an optional learning-rate schedule (torch's ``LinearLR`` warm-up, ``CosineAnnealingLR``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch
from torch.optim import lr_scheduler

from genrec.errors import check_range


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment decay rates.
        lr_schedule: ``constant`` or ``cosine`` (a half cosine to ``min_lr_ratio * lr`` at the last step).
        warmup_steps: linear warm-up steps.
        min_lr_ratio: the cosine's final learning rate as a share of ``lr``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_range("model.optim.lr", self.lr, above=0)
        check_range("model.optim.weight_decay", self.weight_decay, at_least=0)
        if len(self.betas) != 2:
            raise ValueError(f"model.optim.betas must be two numbers, got {self.betas}")
        for i, beta in enumerate(self.betas):
            check_range(f"model.optim.betas[{i}]", beta, at_least=0, below=1)
        object.__setattr__(self, "betas", tuple(self.betas))  # a YAML list compares equal to the default
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"model.optim.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        check_range("model.optim.warmup_steps", self.warmup_steps, at_least=0)
        check_range("model.optim.min_lr_ratio", self.min_lr_ratio, at_least=0, at_most=1)


def schedule(opt: torch.optim.Optimizer, config: OptimConfig, total_steps: int) -> lr_scheduler.LRScheduler:
    """The learning-rate schedule of ``config`` over ``total_steps`` optimizer steps: ``warmup_steps``
    rising linearly to ``lr`` (``(step + 1) / warmup_steps`` of it), then constant or a half cosine."""
    w = config.warmup_steps
    warmup = lr_scheduler.LinearLR(opt, start_factor=1 / w, end_factor=1.0, total_iters=w - 1) if w else None
    if config.lr_schedule == "constant":
        return warmup or lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    cosine = lr_scheduler.CosineAnnealingLR(opt, max(1, total_steps - w), eta_min=config.min_lr_ratio * config.lr)
    return lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[w]) if warmup else cosine

def adamw(params: Iterable[Any], config: OptimConfig, total_steps: Callable[[], float]):
    """The optimizer, or the Lightning ``{"optimizer", "lr_scheduler"}`` dict when scheduled;
    ``total_steps`` is asked only for the cosine schedule."""
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)
    if config.lr_schedule == "constant" and config.warmup_steps <= 1:
        return opt
    total = total_steps() if config.lr_schedule == "cosine" else 0
    if config.lr_schedule == "cosine" and (total <= 0 or total == math.inf):
        raise ValueError(
            "model.optim.lr_schedule needs a finite number of training steps: set trainer.max_epochs or trainer.max_steps"
        )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule(opt, config, int(total)), "interval": "step"}}
