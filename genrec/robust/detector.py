"""LLM4Dec-style fraudster detector (an MLP on LM user embeddings, trained on a known attack's
fakes against the training users, classes balanced by weighting), plus detection metrics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor, nn


@dataclass
class DetectorConfig:
    enabled: bool = True
    hidden: int = 128
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"detector hidden, epochs and lr must be positive, got {self}")


class Detector(nn.Module):
    """Standardised embedding → MLP → fraud logit."""

    def __init__(self, dim: int, config: DetectorConfig | None = None):
        super().__init__()
        self.config = c = config or DetectorConfig()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.net = nn.Sequential(nn.Linear(dim, c.hidden), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)  # (B,)

    def fit(self, x: np.ndarray, labels: np.ndarray) -> "Detector":
        """Full-batch training on (U, D) embeddings and (U,) 0/1 labels."""
        if labels.min() == labels.max():
            raise ValueError("the detector needs both fake (1) and real (0) users to train")
        c = self.config
        torch.manual_seed(c.seed)
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.float32)
        self.mean.copy_(xt.mean(0))
        self.std.copy_(xt.std(0).clamp(min=1e-6))
        pos_weight = (1 - yt).sum() / yt.sum()
        opt = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.train()
        for _ in range(c.epochs):
            loss = F.binary_cross_entropy_with_logits(self(xt), yt, pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self.eval()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability per row. (U,)"""
        return torch.sigmoid(self(torch.as_tensor(x, dtype=torch.float32))).numpy()


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    labels = np.asarray(labels, bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # tied scores share their mean rank: a constant score gets AUC 0.5
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def percentiles(s: torch.Tensor) -> torch.Tensor:
    """Each score's percentile in [0, 1] among ``s``; tied scores share their mean rank."""
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    below = counts.cumsum(0) - counts
    return (below[inverse] + (counts[inverse] - 1) / 2) / max(len(s) - 1, 1)


def max_percentiles(*scores: np.ndarray) -> np.ndarray:
    """Each user ranked by the larger of its percentiles under several scores, as a percentile. (U,)"""
    top = torch.stack([percentiles(torch.as_tensor(np.asarray(s))) for s in scores]).max(0).values
    return percentiles(top).numpy()


def detection_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 of ``scores > threshold`` and the threshold-free ROC-AUC."""
    labels = np.asarray(labels, bool)
    flagged = np.asarray(scores) > threshold
    tp = float((flagged & labels).sum())
    precision = tp / flagged.sum() if flagged.any() else 0.0
    recall = tp / labels.sum() if labels.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "auc": roc_auc(scores, labels),
            "flagged": int(flagged.sum())}
