"""Attack success: how often the targets reach real users' top-k lists.

Protocol: for the evaluated real users of a split (history = the input window before that split's
held-out item, the user's earlier items excluded from the candidates as in clean evaluation), the
top ``k`` of the full catalogue is computed once. Every (user, target) pair where the user never
interacted with the target (anywhere in the real data) counts: T-HR@k is the fraction of pairs
whose target is in the list, T-NDCG@k the mean of 1/log2(rank + 2) over them (0 when absent).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from genrec.data.preprocess import SequenceData
from genrec.recommender import Recommender


def interacted(data: SequenceData, targets: np.ndarray) -> np.ndarray:
    """(U, T) bool: user u has target t anywhere in its sequence."""
    out = np.zeros((data.num_users, len(targets)), bool)
    users = np.repeat(np.arange(data.num_users), data.lengths)
    for j, t in enumerate(targets):
        out[users[data.items == t], j] = True
    return out


@torch.no_grad()
def target_metrics(recommender: Recommender, batches: Iterable[dict[str, Tensor]], data: SequenceData,
                   targets: np.ndarray, k: int = 50) -> dict[str, float]:
    """T-HR@k and T-NDCG@k of ``targets`` (see the module docstring); ``data`` is the clean data."""
    if len(targets) == 0:
        raise ValueError("target_metrics needs at least one target item")
    seen = torch.from_numpy(interacted(data, np.asarray(targets)))  # (U, T)
    tgt = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    hits = gains = pairs = 0.0
    n = data.num_items
    for batch in batches:
        exclude = batch.get("exclude")
        # A user with fewer than k candidates left gets all of them (upper bound: excluded ids may repeat).
        kk = min(k, n - (0 if exclude is None else int((exclude > 0).sum(1).max())))
        ids, _ = recommender.recommend(batch, kk, exclude)  # (B, kk)
        eligible = ~seen[batch["user"]]  # (B, T)
        match = ids[:, None, :] == tgt[None, :, None]  # (B, T, k)
        found = match.any(-1) & eligible
        rank = match.float().argmax(-1)  # (B, T)
        hits += found.sum().item()
        gains += (found / torch.log2(rank + 2.0)).sum().item()
        pairs += eligible.sum().item()
    if pairs == 0:
        raise ValueError("every evaluated user has interacted with every target; T-HR is undefined")
    return {f"t_hr@{k}": hits / pairs, f"t_ndcg@{k}": gains / pairs, "pairs": int(pairs)}
