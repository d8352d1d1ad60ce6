"""The retrieval loss: sampled softmax over uniform random negatives, or full softmax, on similarities
divided by a temperature; a negative equal to the positive is masked out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from genrec.errors import check_range
from genrec.models.jagged_attention import unpack


@dataclass(frozen=True)
class LossConfig:
    """How the retrieval loss contrasts a position's next item with other items (costs: docs/performance.md).

    Args:
        kind: ``sampled_softmax`` (paper setting) or ``full_softmax`` (every catalogue item).
        num_negatives: uniform negatives per position for the sampled softmax.
        negatives: ``position`` (fresh draws at every position), ``sequence`` (one draw per sequence) or
            ``interleaved`` (``negative_groups`` draws per sequence, position l using draw l mod G).
        negative_groups: draws per sequence of ``negatives: interleaved``.
        temperature: softmax temperature on the scores.
    """

    kind: Literal["sampled_softmax", "full_softmax"] = "sampled_softmax"
    num_negatives: int = 128
    negatives: Literal["position", "sequence", "interleaved"] = "position"
    negative_groups: int = 8
    temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in ("sampled_softmax", "full_softmax"):
            raise ValueError(f"model.loss.kind must be 'sampled_softmax' or 'full_softmax', got {self.kind!r}")
        if self.negatives not in ("position", "sequence", "interleaved"):
            raise ValueError(f"model.loss.negatives must be 'position', 'sequence' or 'interleaved', got {self.negatives!r}")
        check_range("model.loss.num_negatives", self.num_negatives, at_least=1)
        check_range("model.loss.negative_groups", self.negative_groups, at_least=1)
        check_range("model.loss.temperature", self.temperature, above=0)


def rows(table: Tensor, ids: Tensor) -> Tensor:
    """``table[ids]`` through ``index_select``, whose backward is faster on CPU than advanced indexing's."""
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[-1])


def logits(cfg: LossConfig, items: Tensor, states: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Logits of the ``valid`` positions, positive first: (M, 1+K), or (M, N+1) for full softmax.

    ``items`` (N+1, D), ``states`` (B, L, D), ``targets`` and ``valid`` (B, L).
    """
    num_items = len(items) - 1
    if cfg.kind == "full_softmax":
        out = states[valid] @ items.T  # (M, N+1)
        out[:, 0] = float("-inf")
        return out / cfg.temperature
    B, K, dev = states.shape[0], cfg.num_negatives, states.device
    flat, where = states[valid], torch.nonzero(valid)  # (M, D), (M, 2): (sequence, position)
    if cfg.negatives == "position":
        neg_ids = torch.randint(1, num_items + 1, (len(flat), K), device=dev)
        neg = torch.bmm(rows(items, neg_ids), flat.unsqueeze(-1)).squeeze(-1)  # (M, K)
    elif cfg.negatives == "sequence":
        ids = torch.randint(1, num_items + 1, (B, K), device=dev)
        neg = torch.bmm(states, rows(items, ids).transpose(1, 2))[valid]  # (B, L, K) -> (M, K)
        neg_ids = ids[where[:, 0]]
    else:  # interleaved
        # G draws per sequence; position l uses draw l % G (same FLOPs as one draw per sequence).
        G, L, D = cfg.negative_groups, states.shape[1], states.shape[2]
        pad = -L % G
        s = F.pad(states, (0, 0, 0, pad)).view(B, (L + pad) // G, G, D).transpose(1, 2)  # (B, G, L/G, D)
        ids = torch.randint(1, num_items + 1, (B, G, K), device=dev)
        scores = torch.einsum("bgld,bgkd->bglk", s, rows(items, ids))  # (B, G, L/G, K)
        neg = scores.transpose(1, 2).reshape(B, L + pad, K)[:, :L][valid]
        neg_ids = ids[where[:, 0], where[:, 1] % G]
    tgt = targets[valid]
    pos = (flat * rows(items, tgt)).sum(-1, keepdim=True)  # (M, 1)
    neg = neg.masked_fill(neg_ids == tgt.unsqueeze(-1), float("-inf"))
    return torch.cat([pos, neg], dim=-1) / cfg.temperature


def position_losses(cfg: LossConfig, items: Tensor, states: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy of each valid position (row-major order), positive against negatives. (M,)

    Equal to cross-entropy over ``logits``; interleaved draws stay in their (B, G, L/G) layout.
    """
    if cfg.kind == "full_softmax" or cfg.negatives != "interleaved":
        out = logits(cfg, items, states, targets, valid)
        labels = targets[valid] if cfg.kind == "full_softmax" else torch.zeros_like(targets[valid])
        return F.cross_entropy(out, labels, reduction="none")
    B, L, D = states.shape
    G, K, T = cfg.negative_groups, cfg.num_negatives, cfg.temperature
    pad = -L % G
    ids = torch.randint(1, len(items), (B, G, K), device=states.device)  # as logits draws
    s = F.pad(states / T, (0, 0, 0, pad)).view(B, (L + pad) // G, G, D).transpose(1, 2)  # (B, G, L/G, D)
    t = F.pad(targets, (0, pad)).view(B, (L + pad) // G, G).transpose(1, 2)  # (B, G, L/G)
    neg = torch.matmul(s, rows(items, ids).transpose(-1, -2))  # (B, G, L/G, K)
    neg = neg.masked_fill(ids[:, :, None, :] == t[..., None], float("-inf"))
    lse = torch.logsumexp(neg, dim=-1).transpose(1, 2).reshape(B, L + pad)[:, :L]  # (B, L)
    pos = (states * rows(items, targets)).sum(-1) / T  # (B, L)
    return (torch.logaddexp(pos, lse) - pos)[valid]


def packed_position_losses(cfg: LossConfig, items: Tensor, states: Tensor, targets: Tensor, at: Tensor,
                           shape: tuple[int, int]) -> Tensor:
    """``position_losses`` of packed ``states`` (T, D) and ``targets`` (T,), ``at`` their indices into
    the flattened (B, L) batch of ``shape``: the same values and draws as on the padded batch. (T,)"""
    if cfg.kind == "full_softmax" or cfg.negatives == "position":
        return position_losses(cfg, items, states[None], targets[None], torch.ones_like(targets[None], dtype=torch.bool))
    B, L = shape
    padded, next_items = unpack(states, at, B, L), unpack(targets, at, B, L)
    return position_losses(cfg, items, padded, next_items, next_items > 0)
