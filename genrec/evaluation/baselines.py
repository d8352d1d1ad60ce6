"""Training-free recommenders: popularity, and text similarity (optionally hubness-corrected).

Both are ``VectorRecommender``s and go through the same evaluation, ``recommend`` lists and
reports as every model, so history exclusion and tie-breaking are the same. The text baseline's user
vector is ``sum_a decay**a * e(item at age a)`` over the model input window (age 0 = the most recent
item), with ``e`` the items' unit-norm sentence embeddings; candidates are scored by the cosine to
it; with ``hubness`` c the score is ``cos(u, e_i) - c h_i``, ``h_i`` the item's mean cosine to its
nearest catalogue neighbours (``text_hubness``). A learned text model that does not beat it has
learned nothing that text similarity alone does not give.
"""
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
