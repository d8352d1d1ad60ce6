"""What every model and baseline is to evaluation: a ``Recommender`` ranks each user's held-out target
(``rank_targets``, under the protocol of ``genrec.metrics``) and lists a user's top k (``recommend``).
``VectorRecommender`` gives both to dot-product scorers, streaming the catalogue chunk by chunk.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from genrec.metrics import RankingMetrics, batch_ranks, topk_items


@runtime_checkable
class Recommender(Protocol):
    """``max_rank``: None when ``rank_targets`` ranks the whole catalogue; K when it knows a top-K
    list only, a target outside it getting rank K (read with ``RankingMetrics(max_rank=K)``)."""

    max_rank: int | None

    def rank_targets(self, batch: dict[str, Tensor], metrics: RankingMetrics,
                     domain: tuple[int, int] | None = None) -> Tensor:
        """(B,) 0-based rank of each ``batch["target"]`` among the catalogue, or among ids ``domain =
        (first, last)`` only, the batch's ``exclude`` ids left out; ``metrics`` updated with them."""

    def recommend(self, batch: dict[str, Tensor], k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Top-k item ids and scores per user, best first, ``exclude`` ids left out. ((B, k), (B, k));
        slots beyond a user's candidates hold id 0 with score -inf."""


class VectorRecommender:
    """A recommender scoring item ``i`` for a user by ``user_vectors(batch) · item_vectors()[i]``."""

    max_rank: int | None = None
    chunk_size: int = 65536  # items scored at a time (bounds memory)

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:  # (B, D)
        raise NotImplementedError

    def item_vectors(self) -> Tensor:  # (N+1, D), row 0 = padding
        raise NotImplementedError

    def ranking_items(self) -> Tensor:
        """The item vectors ranked against: one tensor for every batch (``genrec.metrics`` caches by identity)."""
        return self.item_vectors()

    @torch.no_grad()
    def rank_targets(self, batch: dict[str, Tensor], metrics: RankingMetrics,
                     domain: tuple[int, int] | None = None) -> Tensor:
        ranks = batch_ranks(self.user_vectors(batch), self.ranking_items(), batch, self.chunk_size, domain)
        metrics.update(ranks)
        return ranks

    @torch.no_grad()
    def recommend(self, batch: dict[str, Tensor], k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores, ids = topk_items(self.user_vectors(batch), self.ranking_items(), k, exclude, self.chunk_size, pad=True)
        return ids, scores
