"""Evaluation protocols shared by every model and baseline.

In-domain, leave-one-out: for each evaluated user the held-out item of the split (validation: the
second-to-last interaction, test: the last) is ranked against the full catalogue, with the user's
earlier items excluded as the data module's ``exclude`` option says (the target itself is never
excluded). A scorer is anything with ``user_vectors(batch) -> (B, D)`` and ``item_vectors() ->
(N+1, D)``; models and baselines go through the same code.
"""
from __future__ import annotations

from typing import Iterable, Protocol

import torch
from torch import Tensor

from genrec.evaluation.metrics import RankingMetrics, batch_ranks, popularity_vectors


class Scorer(Protocol):
    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor: ...

    def item_vectors(self) -> Tensor: ...


class PopularityScorer:
    """Ranks items by their training interaction count, the same list for every user."""

    def __init__(self, train_counts: Tensor):
        self.vectors = popularity_vectors(train_counts)

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.ones(len(batch["target"]), 1)

    def item_vectors(self) -> Tensor:
        return self.vectors


@torch.no_grad()
def evaluate_scorer(scorer: Scorer, batches: Iterable[dict[str, Tensor]], metrics: RankingMetrics,
                    chunk_size: int = 65536, domain: tuple[int, int] | None = None) -> dict[str, float]:
    """Metrics of ``scorer`` over ``batches``, ranking within ids ``domain = (first, last)`` if given."""
    items = scorer.item_vectors()
    for batch in batches:
        metrics.update(batch_ranks(scorer.user_vectors(batch), items, batch, chunk_size, domain))
    return {k: float(v) for k, v in metrics.compute().items()}
