"""Few-shot training data: the leave-one-out split of ``SequenceDataModule`` with training limited to
a random share of the users, while validation and test still cover every evaluable user.

This is the "few-shot in-domain model" of the zero-shot comparison (RecGPT): a model that saw only
``train_user_fraction`` of the target domain's users, evaluated on the same split as everyone else.
"""
from __future__ import annotations

import numpy as np

from typing import Any, Literal

from genrec.data.datamodule import Exclude, SequenceDataModule
from genrec.data.raw import DataError


class FewShotDataModule(SequenceDataModule):
    """``SequenceDataModule`` whose training windows come from ``train_user_fraction`` of the users.

    Args:
        train_user_fraction: share of users (drawn with ``fraction_seed``) whose sequences train.
        fraction_seed: seed of that draw, so every run of a config trains on the same users.
        the rest: as ``SequenceDataModule`` (spelled out so that the CLI and evaluate.py see them).
    """

    def __init__(self, train_user_fraction: float = 0.1, fraction_seed: int = 0, dataset: str = "synthetic",
                 root: str | None = None, dataset_options: dict[str, Any] | None = None, cache_dir: str | None = None,
                 download: bool = True, use_cache: bool = True, max_seq_len: int = 200,
                 min_user_interactions: int = 0, min_item_interactions: int = 0, exclude: Exclude = "history",
                 train_windows: Literal["last", "all"] = "last", bucket_by_length: bool = True, batch_size: int = 128,
                 eval_batch_size: int = 512, num_workers: int = 0):
        if not 0 < train_user_fraction <= 1:
            raise DataError(f"data.train_user_fraction must be in (0, 1], got {train_user_fraction}")
        super().__init__(
            dataset=dataset, root=root, dataset_options=dataset_options, cache_dir=cache_dir, download=download,
            use_cache=use_cache, max_seq_len=max_seq_len, min_user_interactions=min_user_interactions,
            min_item_interactions=min_item_interactions, exclude=exclude, train_windows=train_windows,
            bucket_by_length=bucket_by_length, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )
        self.save_hyperparameters()

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
