"""Few-shot training data (RecGPT's few-shot in-domain model): ``SequenceDataModule``'s split with training
limited to a random share of the users, validation and test on every evaluable user."""
from __future__ import annotations

from typing import Any

import numpy as np

from genrec.data.datamodule import SequenceDataModule
from genrec.data.raw import DataError


def check_user_fraction(where: str, fraction: float, seed: int) -> None:
    """Refuse a share outside (0, 1] or a negative seed, naming ``<where>.train_user_fraction`` / ``.fraction_seed``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise DataError(f"{where}.train_user_fraction must be a number in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"{where}.fraction_seed must be a whole number >= 0, got {seed!r}")
    if not 0 < fraction <= 1:
        raise DataError(f"{where}.train_user_fraction must be in (0, 1], got {fraction}")
    if seed < 0:
        raise DataError(f"{where}.fraction_seed must be >= 0, got {seed}")


def drawn_users(num_users: int, fraction: float, seed: int) -> np.ndarray:
    """A mask over ``num_users`` users marking ``round(num_users * fraction)`` of them (at least one), drawn
    with ``seed``: the same users for the same data and seed, whichever module draws them."""
    chosen = np.zeros(num_users, bool)
    chosen[np.random.default_rng(seed).choice(num_users, max(1, round(num_users * fraction)), replace=False)] = True
    return chosen


class FewShotDataModule(SequenceDataModule):
    """``SequenceDataModule`` whose training windows come from ``train_user_fraction`` of the users.

    Args:
        train_user_fraction: share of users (drawn with ``fraction_seed``) whose sequences train.
        fraction_seed: seed of that draw, so every run of a config trains on the same users.
        data_options: ``SequenceDataModule``'s arguments (LightningCLI reads them from its signature).
    """

    def __init__(self, train_user_fraction: float = 0.1, fraction_seed: int = 0, **data_options: Any):
        check_user_fraction("data", train_user_fraction, fraction_seed)
        super().__init__(**data_options)
        self.save_data_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        hp = self.hparams
        chosen = drawn_users(self.data.num_users, hp.train_user_fraction, hp.fraction_seed)
        self.train_set.keep_users(chosen)
        self.train_users = np.flatnonzero(chosen)
