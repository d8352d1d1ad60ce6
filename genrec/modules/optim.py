"""AdamW with an optional learning-rate schedule, shared by the genrec modules.

``constant`` keeps the learning rate fixed (the HSTU paper's setting). ``cosine`` warms up
linearly for ``warmup_steps`` and then decays along a half cosine to ``min_lr_ratio * lr`` at the
last training step (``trainer.estimated_stepping_batches``), so a shorter run still ends annealed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import torch

from genrec.errors import check_range

Schedule = Literal["constant", "cosine"]


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment decay rates.
        lr_schedule: ``constant`` or ``cosine`` (warm-up, then a half cosine to ``min_lr_ratio * lr``).
        warmup_steps: linear warm-up steps.
        min_lr_ratio: the cosine's final learning rate as a share of ``lr``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: Schedule = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"model.optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"model.optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2:
            raise ValueError(f"model.optim.betas must be two numbers, got {self.betas}")
        for i, beta in enumerate(self.betas):
            check_range(f"model.optim.betas[{i}]", beta, at_least=0, below=1)
        object.__setattr__(self, "betas", tuple(self.betas))  # a YAML list compares equal to the default
        check_schedule(self.lr_schedule, self.warmup_steps, self.min_lr_ratio, prefix="model.optim.")


def check_schedule(schedule: str, warmup_steps: int, min_lr_ratio: float, prefix: str = "model.") -> None:
    """Fail at construction, naming the config key, rather than at the first step."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"{prefix}lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    if warmup_steps < 0:
        raise ValueError(f"{prefix}warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"{prefix}min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return warm
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def adamw(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    betas: Sequence[float],
    schedule: str,
    warmup_steps: int,
    min_lr_ratio: float,
    total_steps: Callable[[], float],
):
    """The optimizer, or the Lightning ``{"optimizer", "lr_scheduler"}`` dict when scheduled.

    ``total_steps`` is asked only for the cosine schedule (a module used outside a Trainer, e.g. by
    a surrogate attack's plain loop, then needs no trainer for the constant one).
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if schedule == "constant" and warmup_steps == 0:
        return opt
    total = total_steps() if schedule == "cosine" else 0
    if schedule == "cosine" and (total <= 0 or total == math.inf):
        raise ValueError(
            "model.optim.lr_schedule needs a finite number of training steps: set trainer.max_epochs or trainer.max_steps"
        )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, int(total), schedule, warmup_steps, min_lr_ratio)
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
