"""Evaluation protocols shared by every model and baseline.

In-domain, leave-one-out: for each evaluated user the held-out item of the split (validation: the
second-to-last interaction, test: the last) is ranked against the full catalogue, with the user's
earlier items excluded as the data module's ``exclude`` option says (the target itself is never
excluded). Every ``genrec.recommender.Recommender``, model or baseline, goes through the same code
(``genrec.evaluation.runner``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from genrec.metrics import RankingMetrics


# Fields only some scorers have (a retrieval model reads no text): compared where both reports record them.
SCORER_FIELDS = ("template",)


def protocol(dm: Any, split: str, hr_ks: Sequence[int], ndcg_ks: Sequence[int], template: str | None = None) -> dict[str, Any]:
    """Everything besides the scorer that decides a report's numbers: the split, the catalogue, what
    is excluded from the candidates, the data filters, the metric cut-offs and (for text scorers) the
    item text template. Two reports are compared user by user only when all of it matches; the
    users and their targets are checked on the per-user rows themselves."""
    hp = dm.hparams
    out: dict[str, Any] = {
        "split": split,
        "catalogue": dm.fingerprint,
        "exclude": hp.exclude,
        # unset, empty and 0 all mean "no filter"
        "filters": {key: hp.get(key) for key in ("dataset", "dataset_options", "min_user_interactions", "min_item_interactions")
                    if hp.get(key)},
        "k": {"hr": sorted(set(hr_ks)), "ndcg": sorted(set(ndcg_ks))},
    }
    if hp.exclude == "window":  # the window's length decides what is excluded
        out["window"] = hp.max_seq_len
    if template is not None:
        out["template"] = template
    return out


class UserRanks:
    """Each evaluated user's target rank, kept batch by batch beside the streamed sums (for per-user
    results and bootstrap intervals in one process; training-time evaluation keeps sums only).
    ``metrics`` gives the cut-offs and list length the ranks are read with."""

    def __init__(self, metrics: RankingMetrics):
        self.hr_ks, self.ndcg_ks, self.mrr, self.max_rank = metrics.hr_ks, metrics.ndcg_ks, metrics.mrr, metrics.max_rank
        self._parts: list[tuple[Tensor, Tensor, Tensor]] = []

    def add(self, batch: dict[str, Tensor], ranks: Tensor) -> None:
        self._parts.append((batch["user"].cpu(), batch["target"].cpu(), ranks.cpu()))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, targets, ranks), each (U,), sorted by user index."""
        users, targets, ranks = (torch.cat(p).numpy() for p in zip(*self._parts)) if self._parts else (np.zeros(0, np.int64),) * 3
        order = np.argsort(users, kind="stable")
        return users[order], targets[order], ranks[order]
