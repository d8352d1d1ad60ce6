"""Few-shot training data (RecGPT's few-shot in-domain model): ``SequenceDataModule``'s split with training
limited to a random share of the users, validation and test on every evaluable user."""
from __future__ import annotations

from typing import Any

import numpy as np

from genrec.data.datamodule import SequenceDataModule
from genrec.data.raw import DataError


class FewShotDataModule(SequenceDataModule):
    """``SequenceDataModule`` whose training windows come from ``train_user_fraction`` of the users.

    Args:
        train_user_fraction: share of users (drawn with ``fraction_seed``) whose sequences train.
        fraction_seed: seed of that draw, so every run of a config trains on the same users.
        data_options: ``SequenceDataModule``'s arguments (LightningCLI reads them from its signature).
    """

    def __init__(self, train_user_fraction: float = 0.1, fraction_seed: int = 0, **data_options: Any):
        if not 0 < train_user_fraction <= 1:
            raise DataError(f"data.train_user_fraction must be in (0, 1], got {train_user_fraction}")
        if fraction_seed < 0:
            raise DataError(f"data.fraction_seed must be >= 0, got {fraction_seed}")
        super().__init__(**data_options)
        self.save_data_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        hp = self.hparams
        rng = np.random.default_rng(hp.fraction_seed)
        num_users = self.data.num_users
        chosen = np.zeros(num_users, bool)
        chosen[rng.choice(num_users, max(1, round(num_users * hp.train_user_fraction)), replace=False)] = True
        keep = chosen[self.train_set.users]
        ts = self.train_set
        ts.starts, ts.ends, ts.users = ts.starts[keep], ts.ends[keep], ts.users[keep]
        self.train_users = np.flatnonzero(chosen)
