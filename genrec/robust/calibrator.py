"""LoRec-style calibrator: a small transformer over the recommender's per-position states of a
user's training window and how well each predicted the next item. Its pooled vector is aligned
(cosine) to the user's LM embedding and classified, with that embedding, into fraudster or not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class CalibratorConfig:
    """``warm_epochs``: epochs of an update that starts from the previous update's calibrator (None:
    ``epochs``); ``negatives_per_epoch``: real users drawn afresh for each epoch, every fake kept (None: all)."""

    dim: int = 64
    heads: int = 2
    layers: int = 1
    dropout: float = 0.1
    epochs: int = 20
    warm_epochs: int | None = None
    negatives_per_epoch: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    align_weight: float = 1.0
    states: bool = True  # read the recommender's states (else only the per-position fit scores)
    lm_in_head: bool = True  # classify with the projected LM embedding too (else LM only as alignment target)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"calibrator dim {self.dim} must be divisible by heads {self.heads}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or (self.warm_epochs is not None and self.warm_epochs < 1):
            raise ValueError(f"calibrator epochs, batch_size and lr must be positive, got {self}")
        if self.negatives_per_epoch is not None and self.negatives_per_epoch < 1:
            raise ValueError(f"calibrator negatives_per_epoch must be positive or null (all), got {self.negatives_per_epoch}")


@dataclass
class SequenceFeatures:
    """What the calibrator reads for a set of users."""

    states: Tensor  # (U, L, D) recommender states, zero beyond each length
    fit: Tensor  # (U, L) cosine score of the next item at each position
    lengths: Tensor  # (U,)
    lm: Tensor  # (U, E) LM embeddings

    @property
    def mean_fit(self) -> Tensor:
        """(U,) the mean next-item cosine over each window's positions."""
        return self.fit.sum(1) / self.lengths.clamp(min=1)

    def __len__(self) -> int:
        return len(self.lengths)

    def select(self, idx: Tensor) -> "SequenceFeatures":
        return SequenceFeatures(self.states[idx], self.fit[idx], self.lengths[idx], self.lm[idx])

    @staticmethod
    def cat(parts: list["SequenceFeatures"]) -> "SequenceFeatures":
        width = max(p.states.shape[1] for p in parts)
        pad = lambda t: F.pad(t, (0, 0, 0, width - t.shape[1])) if t.dim() == 3 else F.pad(t, (0, width - t.shape[1]))
        return SequenceFeatures(*(torch.cat([pad(getattr(p, k)) for p in parts]) for k in ("states", "fit")),
                                *(torch.cat([getattr(p, k) for p in parts]) for k in ("lengths", "lm")))


class Calibrator(nn.Module):
    def __init__(self, rec_dim: int, lm_dim: int, max_len: int, config: CalibratorConfig | None = None):
        super().__init__()
        self.config = c = config or CalibratorConfig()
        self.inp = nn.Linear(rec_dim + 1, c.dim)
        self.pos = nn.Embedding(max_len, c.dim)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 2 * c.dim, c.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.align = nn.Linear(c.dim, lm_dim)
        self.lm_proj = nn.Sequential(nn.LayerNorm(lm_dim), nn.Linear(lm_dim, c.dim))
        self.head = nn.Sequential(nn.Linear(2 * c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, 1))

    def forward(self, f: SequenceFeatures) -> tuple[Tensor, Tensor]:
        """Fraud logits (U,) and the sequence vectors' LM-space projections (U, E)."""
        L = f.states.shape[1]
        pad = torch.arange(L, device=f.states.device)[None, :] >= f.lengths[:, None]  # (U, L)
        states = f.states if self.config.states else torch.zeros_like(f.states)
        x = self.inp(torch.cat([states, f.fit.unsqueeze(-1)], -1)) + self.pos.weight[:L]  # (U, L, d)
        h = self.encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1)  # (U, d)
        lm = self.lm_proj(f.lm) if self.config.lm_in_head else torch.zeros_like(pooled)
        logits = self.head(torch.cat([pooled, lm], -1)).squeeze(-1)
        return logits, self.align(pooled)

    def fit(self, features: SequenceFeatures, labels: Tensor, epochs: int | None = None) -> float:
        """Trains ``epochs`` passes (default ``config.epochs``); returns the last epoch's mean loss."""
        c = self.config
        gen = torch.Generator().manual_seed(c.seed)
        opt = torch.optim.AdamW(self.parameters(), lr=c.lr)
        labels = labels.float()
        positives, negatives = (labels > 0).nonzero().squeeze(1), (labels == 0).nonzero().squeeze(1)
        drawn = min(len(negatives), c.negatives_per_epoch or len(negatives))
        pos_weight = torch.tensor(drawn, dtype=torch.float32) / max(len(positives), 1)
        self.train()
        total = 0.0
        for _ in range(epochs or c.epochs):
            if drawn < len(negatives):
                rows = torch.cat([positives, negatives[torch.randperm(len(negatives), generator=gen)[:drawn]]])
                order = rows[torch.randperm(len(rows), generator=gen)]
            else:
                order = torch.randperm(len(labels), generator=gen)
            total, batches = 0.0, 0
            for idx in order.split(c.batch_size):
                batch = features.select(idx)
                logits, aligned = self(batch)
                loss = F.binary_cross_entropy_with_logits(logits, labels[idx], pos_weight=pos_weight)
                loss = loss + c.align_weight * (1 - F.cosine_similarity(aligned, batch.lm, dim=-1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, batches = total + loss.item(), batches + 1
            total /= batches
        self.eval()
        return total

    @torch.no_grad()
    def predict(self, features: SequenceFeatures, batch_size: int = 1024) -> np.ndarray:
        self.eval()
        out = [torch.sigmoid(self(features.select(idx))[0]) for idx in torch.arange(len(features)).split(batch_size)]
        return torch.cat(out).numpy()


@torch.no_grad()
def sequence_features(module, histories: list[np.ndarray], stamps: list[np.ndarray], lm: np.ndarray,
                      max_len: int, batch_size: int = 512) -> SequenceFeatures:
    """The recommender's states over each history's last ``max_len + 1`` items, how well each
    predicted the next item, and the LM embeddings. ``module`` is any genrec retrieval module
    (``encode`` and ``item_vectors``)."""
    was_training = module.training
    module.eval()
    items = module.item_vectors()
    device = items.device
    pad = lambda rows: torch.stack([F.pad(torch.as_tensor(r, dtype=torch.long), (0, max_len - len(r))) for r in rows])
    states, fits, lengths = [], [], []
    for start in range(0, len(histories), batch_size):
        spans = [h[-max_len - 1 :] for h in histories[start : start + batch_size]]
        times = [t[-max_len - 1 :] for t in stamps[start : start + batch_size]]
        n = torch.as_tensor([max(1, len(w) - 1) for w in spans])
        inp, tgt, ts = pad([w[:-1] for w in spans]), pad([w[1:] for w in spans]), pad([t[:-1] for t in times])  # (B, L)
        batch = {"items": inp.to(device), "timestamps": ts.to(device), "lengths": n.to(device)}
        s = module.encode(batch)  # (B, L, D)
        valid = (tgt > 0).to(device)
        fit = (s * items[tgt.to(device)]).sum(-1) * valid  # (B, L)
        states.append((s * valid.unsqueeze(-1)).float().cpu())
        fits.append(fit.float().cpu())
        lengths.append(n)
    module.train(was_training)
    return SequenceFeatures(torch.cat(states), torch.cat(fits), torch.cat(lengths), torch.as_tensor(lm, dtype=torch.float32))
