"""Training-free recommenders: popularity, and text similarity (``TextScorer``, optionally hubness-corrected)."""
from __future__ import annotations

import torch
from torch import Tensor

from genrec.metrics import popularity_vectors
from genrec.models.text_prior import TextScorer
from genrec.recommender import VectorRecommender

__all__ = ["PopularityScorer", "TextScorer"]  # TextScorer lives beside the formula it shares with the generative prior


class PopularityScorer(VectorRecommender):
    """Ranks items by their training interaction count, the same list for every user."""

    def __init__(self, train_counts: Tensor):
        self.vectors = popularity_vectors(train_counts)

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.ones(len(batch["items"]), 1)

    def item_vectors(self) -> Tensor:
        return self.vectors
