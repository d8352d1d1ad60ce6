"""Text similarity: the text baseline's scorer and the generative model's prior on item scores.

A user is the unit, recency-weighted mean (``decay ** age``) of the history's unit text embeddings; an item
scores ``λ (cos(u, e_i) - γ h_i) + β log(1 + count_i)``, ``h_i`` its hubness (mean cosine to its ``k``
nearest neighbours, as in CSLS), ``λ, γ, β`` learned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrec.decoding import CodeTrie
from genrec.recommender import VectorRecommender


@dataclass
class TextPriorConfig:
    """The generative model's text prior.

    Args:
        decay: recency weight per step back in the user vector, in (0, 1].
        scale: initial ``λ`` (learned), the sharpness of the cosine.
        popularity: add ``β log(1 + count_i)`` (0 for a catalogue without counts).
        popularity_scale: initial ``β`` (learned).
        hubness: subtract ``γ h_i`` from the cosine, ``γ`` learned from 0.
        hubness_k: neighbours in ``h_i``.
        center: score in each catalogue's centred space, as ``evaluate.py baseline --center``.
        whiten: also whiten that space (0: off), as ``evaluate.py baseline --whiten``.
    """

    decay: float = 0.3
    scale: float = 20.0
    popularity: bool = False
    popularity_scale: float = 1.0
    hubness: bool = False
    hubness_k: int = 50
    center: bool = False
    whiten: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.decay <= 1:
            raise ValueError(f"model.prior.decay must be in (0, 1], got {self.decay}")
        if not 0 <= self.whiten <= 1:
            raise ValueError(f"model.prior.whiten must be in [0, 1] (0: off, 1: full whitening), got {self.whiten}")
        if self.hubness_k < 1:
            raise ValueError(f"model.prior.hubness_k must be at least 1, got {self.hubness_k}")


def recency_user_vectors(unit_items: Tensor, items: Tensor, decay: float, lengths: Tensor | None = None) -> Tensor:
    """Unit recency-weighted mean of ``unit_items`` (N+1, E) over ``items`` (B, L): (B, L, E), or (B, E)
    after each row's last item with ``lengths``."""
    L = items.shape[1]
    age = torch.arange(L, device=items.device)
    age = age[:, None] - age[None]  # (L, L): steps from item j back to position l
    weights = torch.where(age >= 0, decay ** age.clamp(min=0).float(), 0.0)
    text = unit_items[items] * (items > 0)[..., None]  # (B, L, E)
    if lengths is not None:
        last = (lengths - 1).clamp(min=0)
        return F.normalize(torch.einsum("bj,bje->be", weights[last], text), dim=-1)
    return F.normalize(torch.einsum("lj,bje->ble", weights, text), dim=-1)


@torch.no_grad()
def text_hubness(unit: Tensor, k: int, domains: Sequence[tuple[int, int]] | None = None, max_reference: int = 50_000,
                 chunk: int = 2048) -> Tensor:
    """(N+1,) mean cosine of every item of ``unit`` to its ``k`` nearest others within its domain (0 outside).

    A domain over ``max_reference`` items is compared with a fixed sample of that size, ``k`` scaled down alike.
    """
    if k < 1:
        raise ValueError(f"hubness k must be at least 1, got {k}")
    out = torch.zeros(len(unit), device=unit.device)
    for lo, hi in domains or [(1, len(unit) - 1)]:
        items = unit[lo : hi + 1]
        n = len(items)
        if n < 2:
            continue
        pick, kk = torch.arange(n), min(k, n - 1)
        if n > max_reference:
            pick = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_reference].sort().values
            kk = max(1, round(k * max_reference / n))
        column = torch.full((n,), -1, dtype=torch.long)
        column[pick] = torch.arange(len(pick))  # where each item sits in the reference, -1 if absent
        ref, column = items[pick.to(items.device)], column.to(items.device)
        for start in range(0, n, chunk):
            sims = items[start : start + chunk] @ ref.T
            rows = torch.arange(len(sims), device=sims.device)
            own = column[start : start + len(sims)]
            sims[rows[own >= 0], own[own >= 0]] = float("-inf")  # an item is not its own neighbour
            out[lo + start : lo + start + len(sims)] = sims.topk(kk, dim=1).values.mean(1)
    return out


def center_catalogue(unit: Tensor, domains: Sequence[tuple[int, int]] | None = None, whiten: float = 0.0) -> Tensor:
    """``unit`` (N+1, E) with each domain's mean subtracted, rows renormalised; zero rows stay zero.

    ``whiten`` in [0, 1] also maps the centred rows through ``S^(-1/2)``, ``S = whiten * C + (1 -
    whiten) * tr(C) / E * I`` (``C`` the domain's item covariance).
    """
    if not 0 <= whiten <= 1:
        raise ValueError(f"whiten must be in [0, 1] (0: centring only, 1: full whitening), got {whiten}")
    out = unit.clone()
    for lo, hi in domains or [(1, len(unit) - 1)]:
        items = unit[lo : hi + 1]
        present = items.norm(dim=-1) > 0
        if not present.any():
            continue
        centred = items - items[present].mean(0)
        if whiten:
            centred = centred @ shrunk_inverse_sqrt(centred[present], whiten).to(centred)
        out[lo : hi + 1] = torch.where(present[:, None], F.normalize(centred, dim=-1), items)
    return out


def shrunk_inverse_sqrt(centred: Tensor, whiten: float, floor: float = 1e-6) -> Tensor:
    """float64 ``S^(-1/2)`` (E, E) of ``center_catalogue``; eigenvalues are floored at ``floor`` times the largest."""
    x = centred.double()
    cov = x.T @ x / len(x)
    dim = cov.shape[0]
    cov = whiten * cov + (1 - whiten) * cov.trace() / dim * torch.eye(dim, dtype=cov.dtype, device=cov.device)
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp(min=floor * values.max().clamp(min=1e-30))
    return (vectors * values.rsqrt()) @ vectors.T


@torch.no_grad()
def mean_pair_cosine(unit: Tensor, domains: Sequence[tuple[int, int]] | None = None, pairs: int = 10_000,
                     seed: int = 0) -> list[float]:
    """Per domain, the mean cosine of a fixed sample of pairs of distinct items with text (nan under two items)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lo, hi in domains or [(1, len(unit) - 1)]:
        ids = lo + torch.nonzero(unit[lo : hi + 1].norm(dim=-1) > 0).flatten().cpu()
        if len(ids) < 2:
            out.append(float("nan"))
            continue
        a = torch.randint(len(ids), (pairs,), generator=g)
        b = (a + torch.randint(1, len(ids), (pairs,), generator=g)) % len(ids)  # never a itself
        left, right = unit[ids[a].to(unit.device)], unit[ids[b].to(unit.device)]
        out.append(float((F.normalize(left, dim=-1) * F.normalize(right, dim=-1)).sum(-1).mean()))
    return out


class TextPrior(nn.Module):
    """Learned ``λ`` (``scale``), ``γ`` (``hubness_scale``), ``β`` (``popularity_scale``) over the text of the
    catalogue given to ``set_items`` (not saved)."""

    def __init__(self, config: TextPriorConfig, embed_dim: int):
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.tensor(float(config.scale)))
        self.popularity_scale = nn.Parameter(torch.tensor(float(config.popularity_scale))) if config.popularity else None
        self.hubness_scale = nn.Parameter(torch.zeros(())) if config.hubness else None  # γ = 0: the text baseline at the start
        self.register_buffer("unit", torch.zeros(0, embed_dim), persistent=False)  # (N+1, E) unit text embeddings
        self.register_buffer("logpop", torch.zeros(0), persistent=False)  # (N+1,) log(1 + training count)
        self.register_buffer("hub", torch.zeros(0), persistent=False)  # (N+1,) text_hubness, with hubness

    def set_items(self, embeddings: Tensor, counts: Tensor | None = None,
                  domains: Sequence[tuple[int, int]] | None = None) -> None:
        """A catalogue's text embeddings (N+1, E), training counts (N+1,) or None, and domains ``(first, last)``."""
        device = self.scale.device
        self.unit = F.normalize(embeddings.float(), dim=-1).to(device)
        if self.config.center or self.config.whiten:
            self.unit = center_catalogue(self.unit, domains, self.config.whiten)
        self.logpop = (torch.zeros(len(embeddings)) if counts is None else counts.float().log1p()).to(device)
        self.hub = (text_hubness(self.unit, self.config.hubness_k, domains) if self.hubness_scale is not None
                    else torch.zeros(len(embeddings), device=device))

    def users(self, items: Tensor, lengths: Tensor | None = None) -> Tensor:
        """User vectors at every position (B, L, E), or after the last item with ``lengths`` (B, E)."""
        return recency_user_vectors(self.unit, items, self.config.decay, lengths)

    def item_scores(self, users: Tensor, span: tuple[int, int] | None = None) -> Tensor:
        """(R, N+1) scores of every item for users (R, E), column 0 = padding; or of ``span = (first, last)`` only."""
        lo, hi = span or (1, len(self.unit) - 1)
        rows = torch.arange(lo - 1, hi + 1, device=self.unit.device)
        rows[0] = 0  # padding
        cos = users @ self.unit[rows].T
        if self.hubness_scale is not None:
            cos = cos - self.hubness_scale * self.hub[rows]
        scores = self.scale * cos
        if self.popularity_scale is not None:
            scores = scores + self.popularity_scale * self.logpop[rows]
        return scores


class TextScorer(VectorRecommender):
    """Scorer over item text embeddings (N+1, E); ``center``, ``whiten`` and ``domains`` as in ``center_catalogue``."""

    def __init__(self, item_embeddings: Tensor, decay: float = 0.3, hubness: float = 0.0, hubness_k: int = 50,
                 center: bool = False, domains: Sequence[tuple[int, int]] | None = None, whiten: float = 0.0):
        if not 0 < decay <= 1:
            raise ValueError(f"text baseline decay must be in (0, 1], got {decay}")
        self.items = F.normalize(item_embeddings.float(), dim=-1)
        if center or whiten:
            self.items = center_catalogue(self.items, domains, whiten)
        self.decay = decay
        # the hubness term rides on one extra dimension: user (u, 1) · item (e_i, -c h_i)
        self.hubness = bool(hubness)
        self.vectors = (torch.cat([self.items, -hubness * text_hubness(self.items, hubness_k, domains)[:, None]], 1)
                        if hubness else self.items)

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        users = recency_user_vectors(self.items, batch["items"], self.decay, batch["lengths"])  # (B, E)
        return torch.cat([users, torch.ones(len(users), 1, device=users.device)], 1) if self.hubness else users

    def item_vectors(self) -> Tensor:
        return self.vectors  # one tensor for every call: evaluation caches per-items work by identity


def trie_priors(item_scores: Tensor, trie: CodeTrie, exclude: Tensor | None = None, first: int = 1) -> list[Tensor]:
    """Per trie level, ``log Σ exp(score_i)`` over the items below each node (R, nodes), from
    ``TextPrior.item_scores`` (R, 1 + n); the last level is the scores; ``exclude`` ids are left out."""
    scores = item_scores.clone()
    scores[:, 0] = float("-inf")
    if exclude is not None:
        column = exclude - (first - 1)
        scores = scores.scatter(1, column.masked_fill((column < 1) | (column >= scores.shape[1]), 0), float("-inf"))
    below = scores[:, trie.paths[:, -1] - (first - 1)]  # (R, N_trie): the trie's items
    out = []
    for t in range(trie.depth - 1):
        node = trie.paths[:, t].expand_as(below)
        top = below.new_full((len(below), trie.num_nodes(t)), float("-inf")).scatter_reduce(1, node, below, "amax")
        top = top.clamp(min=-1e30)  # nodes with every item excluded: -inf stays -inf below, not NaN
        total = torch.zeros_like(top).scatter_add_(1, node, (below - top.gather(1, node)).exp())
        out.append(top + total.log())
    return out + [scores]


def prior_at(priors: list[Tensor], t: int, nxt: Tensor, first: int = 1) -> Tensor:
    """``trie_priors``' level ``t`` at child nodes ``nxt`` (R, K) (item ids at the last level)."""
    if t == len(priors) - 1:
        nxt = (nxt - (first - 1)).clamp(min=0)  # invalid slots (id 0) read the padding column
    return priors[t].gather(1, nxt)
