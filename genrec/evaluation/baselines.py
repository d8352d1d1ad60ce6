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
import torch.nn.functional as F
from torch import Tensor

from genrec.metrics import popularity_vectors
from genrec.models.text_prior import recency_user_vectors, text_hubness
from genrec.recommender import VectorRecommender


class PopularityScorer(VectorRecommender):
    """Ranks items by their training interaction count, the same list for every user."""

    def __init__(self, train_counts: Tensor):
        self.vectors = popularity_vectors(train_counts)

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.ones(len(batch["items"]), 1)

    def item_vectors(self) -> Tensor:
        return self.vectors


class TextScorer(VectorRecommender):
    """Scorer over item text embeddings (N+1, E), row 0 = padding."""

    def __init__(self, item_embeddings: Tensor, decay: float = 0.3, hubness: float = 0.0, hubness_k: int = 50):
        if not 0 < decay <= 1:
            raise ValueError(f"text baseline decay must be in (0, 1], got {decay}")
        self.items = F.normalize(item_embeddings.float(), dim=-1)
        self.decay = decay
        # the hubness term rides on one extra dimension: user (u, 1) · item (e_i, -c h_i)
        self.hubness = bool(hubness)
        self.vectors = torch.cat([self.items, -hubness * text_hubness(self.items, hubness_k)[:, None]], 1) if hubness else self.items

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        users = recency_user_vectors(self.items, batch["items"], self.decay, batch["lengths"])  # (B, E)
        return torch.cat([users, torch.ones(len(users), 1)], 1) if self.hubness else users

    def item_vectors(self) -> Tensor:
        return self.vectors
