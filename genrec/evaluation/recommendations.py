"""Top-K lists as tables: one row per (user, position) with raw ids, scores and titles."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch


def recommendation_table(data: Any, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Long table of lists ``items``/``scores`` (U, K) of ``users`` (U,) with raw ids and titles, sorted
    by user then position; empty slots (item 0) are left out."""
    order = np.argsort(users, kind="stable")
    users, items, scores = users[order], items[order], scores[order]
    k = items.shape[1]
    filled = items.reshape(-1) > 0
    flat = items.reshape(-1)[filled]
    table = pd.DataFrame({
        "user": np.repeat(users, k)[filled],
        "user_id": np.repeat(data.user_ids[users], k)[filled],
        "position": np.tile(np.arange(1, k + 1), len(users))[filled],
        "item": flat,
        "item_id": data.item_ids[flat],
        "score": scores.reshape(-1)[filled],
    })
    text = data.item_text
    if text is not None and "title" in text.columns:
        table["title"] = text["title"].to_numpy()[flat]
    return table


@torch.no_grad()
def example_recommendations(model: Any, loader: Any, data: Any, users: int = 5, k: int = 10) -> pd.DataFrame:
    """The top ``k`` of the first ``users`` users of ``loader`` as a ``recommendation_table``, with ``is_target``."""
    batch = {key: value[:users] for key, value in next(iter(loader)).items()}
    items, scores = model.recommend(batch, k, batch.get("exclude"))
    table = recommendation_table(data, batch["user"].numpy(), items.cpu().numpy(), scores.cpu().numpy())
    target = dict(zip(batch["user"].tolist(), batch["target"].tolist()))
    table["is_target"] = table["item"].to_numpy() == table["user"].map(target).to_numpy()
    return table
