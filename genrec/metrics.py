"""Full-catalogue ranking evaluation that streams over item chunks and keeps only running sums.

Protocol (leave-one-out, full ranking, no sampled negatives): each user's held-out target ``t`` in
``1..N`` (0 is padding) is ranked against every item ``1..N`` but those in ``exclude`` (``t`` itself
always ranked). Item ``j`` is ahead of ``t`` iff ``s_j > s_t`` or (``s_j == s_t`` and ``j < t``), so
a constant scorer gets no free hits; the 0-based rank is the number ahead. HR@k = 1[rank < k],
NDCG@k = 1 / log2(rank + 2) if rank < k else 0, MRR = 1 / (rank + 1).

Scores are float32 dot products of user and item vectors, computed one chunk of items at a time.
Ranked lists (generative decoding) go through ``ranks_from_topk`` and ``RankingMetrics(max_rank=K)``.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterator

import torch
from torch import Tensor
from torchmetrics import Metric

# Rows per matmul when scoring targets alone; small enough that the (R, R) product is negligible.
_TARGET_BLOCK = 256
# int64 words summed per group in _count_greater: each byte lane then holds at most 128 < 256 ones.
_WORDS_PER_GROUP = 128
_PACK = 8 * _WORDS_PER_GROUP


def target_ranks(
    query: Tensor,
    items: Tensor,
    targets: Tensor,
    exclude: Tensor | None = None,
    chunk_size: int = 65536,
) -> Tensor:
    """(B,) 0-based full-catalogue rank of each target (B,), under the protocol in the module docstring.

    ``query`` (B, D), ``items`` (N+1, D) (row 0 never scored), ``exclude`` (B, H) ids to drop (0 = pad);
    ``chunk_size``: items scored per matmul (memory about B * chunk_size * 5 bytes).
    """
    n = _check_inputs(query, items, chunk_size)
    batch = query.shape[0]
    if targets.shape != (batch,):
        raise ValueError(f"targets must have shape ({batch},), got {tuple(targets.shape)}")
    targets = targets.long()
    if batch and (targets.min() < 1 or targets.max() > n):
        raise ValueError(f"targets must be item ids in 1..{n}")
    q = query.float()
    s_t = _target_scores(q, items, targets)  # (B,)
    if torch.isnan(s_t).any() or torch.isneginf(s_t).any():
        raise ValueError("a target scored NaN or -inf; its rank would be meaningless")
    # The target is dropped from its own count: it cannot be ahead of itself, and rounding must not say so.
    drop = targets[:, None] if exclude is None else torch.cat([_as_ids(exclude, batch), targets[:, None]], 1)
    ahead = torch.zeros(batch, dtype=torch.long, device=q.device)
    # Items with exactly the target's vector tie with it by definition, but a matmul of another shape
    # may round their score differently on some CPUs: they are counted by id here and left out below.
    copies = _target_copies(items, targets)
    if copies is not None:
        candidate = (copies > 0) & ~(copies[:, :, None] == drop[:, None, :]).any(-1)
        ahead += (candidate & (copies < targets[:, None])).sum(1)
        drop = torch.cat([drop, copies], 1)
    # Ahead of t in a chunk wholly below t means s_j >= s_t, i.e. s_j > the float just below s_t.
    s_below = torch.nextafter(s_t, torch.full_like(s_t, -torch.inf))
    flags = torch.empty(batch, _padded(min(chunk_size, n)), dtype=torch.bool, device=q.device)
    # NaN compares false with everything, so dropped items are never ahead.
    chunks = _scored_chunks(q, items, chunk_size, drop, torch.nan)
    for (lo, hi, s), (rows, t) in zip(chunks, _split_by_chunk(targets[:, None], n, chunk_size)):
        threshold = torch.where(targets >= hi, s_below, s_t)  # (B,)
        ahead += _count_greater(s, threshold, flags)
        # Rows whose target lies inside this chunk counted only strict wins; add ties with lower ids.
        if rows.numel():
            ids = torch.arange(lo, hi, device=q.device)  # (C,)
            ties = (s[rows] == s_t[rows, None]) & (ids < t[:, None])  # (R, C)
            ahead[rows] += ties.sum(1)
    return ahead


def topk_items(
    query: Tensor,
    items: Tensor,
    k: int,
    exclude: Tensor | None = None,
    chunk_size: int = 65536,
    pad: bool = False,
) -> tuple[Tensor, Tensor]:
    """(B, k) best scores, descending, and item ids per user; equal scores put the lower id first.

    Args as in ``target_ranks``. k may not exceed any user's candidates unless ``pad``: then slots beyond
    them hold id 0 with score -inf (real scores are clamped above it).
    """
    n = _check_inputs(query, items, chunk_size)
    batch = query.shape[0]
    drop = None if exclude is None else _as_ids(exclude, batch)
    most_dropped = 0 if drop is None or not batch or pad else int(_distinct_in_catalogue(drop, n).max())
    if not 1 <= k <= n - most_dropped:
        raise ValueError(f"k={k} must be in 1..{n - most_dropped} (catalogue {n}, at most {most_dropped} excluded)")
    q = query.float()
    best_scores = q.new_empty(batch, 0)
    best_ids = torch.empty(batch, 0, dtype=torch.long, device=q.device)
    lowest = torch.finfo(torch.float32).min
    for lo, hi, s in _scored_chunks(q, items, chunk_size, drop, -torch.inf, clamp_min=lowest):
        kk = min(k, hi - lo)
        scores, cols = torch.topk(s, kk, dim=1)  # (B, kk)
        # topk picks arbitrarily among items tied with its last value; a stable sort picks lower ids.
        rows = ((s >= scores[:, -1:]).sum(1) > kk).nonzero().squeeze(1)  # (R,)
        if rows.numel():
            sorted_scores, sorted_cols = torch.sort(s[rows], dim=1, descending=True, stable=True)
            scores[rows], cols[rows] = sorted_scores[:, :kk], sorted_cols[:, :kk]
        best_scores, best_ids = _merge_topk(
            torch.cat([best_scores, scores], 1), torch.cat([best_ids, cols + lo], 1), k
        )
    if pad:  # only dropped ids score -inf: real scores were clamped above it
        best_ids = best_ids.masked_fill(best_scores == -torch.inf, 0)
    return best_scores, best_ids


def restrict_to_domain(items: Tensor, target: Tensor, exclude: Tensor | None, first: int, last: int
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Re-index a ranking problem to the catalogue ids ``first..last`` only (as ``1..last-first+1``)."""
    shift = first - 1
    sliced = torch.cat([items[:1], items[first : last + 1]])
    if exclude is not None:
        inside = (exclude >= first) & (exclude <= last)
        exclude = torch.where(inside, exclude - shift, torch.zeros_like(exclude))
    return sliced, target - shift, exclude


def batch_ranks(users: Tensor, items: Tensor, batch: dict[str, Tensor], chunk_size: int = 65536,
                domain: tuple[int, int] | None = None) -> Tensor:
    """Target ranks of an evaluation batch (its ``target`` and optional ``exclude``) among ``items``,
    or among the ids ``domain = (first, last)`` only."""
    target, exclude = batch["target"], batch.get("exclude")
    if domain is not None:
        items, target, exclude = restrict_to_domain(items, target, exclude, *domain)
    return target_ranks(users, items, target, exclude, chunk_size)


def ranks_from_topk(topk_ids: Tensor, targets: Tensor) -> Tensor:
    """(B,) rank of each target (B,) in ``topk_ids`` (B, K), best first: its position, or K when absent."""
    hit = topk_ids == targets[:, None]  # (B, K)
    first = hit.int().argmax(1)  # (B,)
    return torch.where(hit.any(1), first, topk_ids.shape[1]).long()


def popularity_vectors(train_counts: Tensor) -> Tensor:
    """(N+1, 1) item vectors scoring each item by its training count (N+1,), row 0 -inf; pair with a query of ones."""
    vectors = train_counts.float().clone()
    vectors[0] = -torch.inf
    return vectors[:, None]


class RankingMetrics(Metric):
    """HR@k, NDCG@k and MRR from 0-based target ranks, as sums that reduce across processes.

    ``max_rank``: the ranks come from top-K lists (rank K = not in the list); MRR then counts ranks below K.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        hr_ks: tuple[int, ...] = (1, 10, 50, 200),
        ndcg_ks: tuple[int, ...] = (10, 50, 200),
        mrr: bool = True,
        max_rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hr_ks = tuple(sorted(set(hr_ks)))
        self.ndcg_ks = tuple(sorted(set(ndcg_ks)))
        self.mrr = mrr
        self.max_rank = max_rank
        ks = self.hr_ks + self.ndcg_ks
        if any(k < 1 for k in ks) or (max_rank is not None and max_rank < 1):
            raise ValueError(f"cut-offs and max_rank must be >= 1, got {hr_ks}, {ndcg_ks}, {max_rank}")
        if max_rank is not None and any(k > max_rank for k in ks):
            raise ValueError(f"cut-offs {ks} exceed the list length max_rank={max_rank}: those metrics are unknown")
        # float64 keeps sums exact far beyond any catalogue of users (integers up to 2**53).
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hr", torch.zeros(len(self.hr_ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", torch.zeros(len(self.ndcg_ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rr", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Tensor) -> None:
        """Add a batch of (B,) integer 0-based ranks."""
        if ranks.ndim != 1 or ranks.is_floating_point() or ranks.is_complex():
            raise ValueError(f"ranks must be a 1-D integer tensor, got {ranks.dtype} of shape {tuple(ranks.shape)}")
        if not ranks.numel():
            return
        if ranks.min() < 0:
            raise ValueError("ranks must be >= 0")
        if self.max_rank is not None and ranks.max() > self.max_rank:
            raise ValueError(f"ranks from lists of {self.max_rank} items must be <= {self.max_rank}")
        r = ranks.to(torch.float64)[:, None]  # (B, 1)
        gain = 1.0 / torch.log2(r + 2.0)  # (B, 1)
        hr_ks = torch.tensor(self.hr_ks, dtype=torch.float64, device=r.device)
        ndcg_ks = torch.tensor(self.ndcg_ks, dtype=torch.float64, device=r.device)
        self.count += ranks.numel()
        self.hr += (r < hr_ks).sum(0)
        self.ndcg += torch.where(r < ndcg_ks, gain, 0.0).sum(0)
        if self.mrr:
            found = r < (self.max_rank if self.max_rank is not None else torch.inf)
            self.rr += torch.where(found, 1.0 / (r + 1.0), 0.0).sum()

    def compute(self) -> dict[str, Tensor]:
        out = {f"hr@{k}": self.hr[i] / self.count for i, k in enumerate(self.hr_ks)}
        out |= {f"ndcg@{k}": self.ndcg[i] / self.count for i, k in enumerate(self.ndcg_ks)}
        if self.mrr:
            out["mrr"] = self.rr / self.count
        return out


def _check_inputs(query: Tensor, items: Tensor, chunk_size: int) -> int:
    if query.ndim != 2 or items.ndim != 2 or query.shape[1] != items.shape[1]:
        raise ValueError(f"need query (B, D) and items (N+1, D), got {tuple(query.shape)} and {tuple(items.shape)}")
    if items.shape[0] < 2:
        raise ValueError("items needs the padding row and at least one item")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return items.shape[0] - 1


def _as_ids(exclude: Tensor, batch: int) -> Tensor:
    if exclude.ndim != 2 or exclude.shape[0] != batch:
        raise ValueError(f"exclude must have shape ({batch}, H), got {tuple(exclude.shape)}")
    return exclude.long()


def _distinct_in_catalogue(ids: Tensor, n: int) -> Tensor:
    """(B,) number of distinct ids in 1..n per row of ids (B, H)."""
    ids = ids.sort(1).values  # (B, H)
    new = torch.ones_like(ids, dtype=torch.bool)
    new[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return (new & (ids >= 1) & (ids <= n)).sum(1)


def _merge_topk(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Best k of (B, M) candidates with distinct ids, ordered by score descending, then id ascending."""
    by_id = ids.argsort(1)  # (B, M)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    by_score = scores.argsort(dim=1, descending=True, stable=True)[:, :k]  # (B, k)
    return scores.gather(1, by_score), ids.gather(1, by_score)


_KEYS: tuple[Any, int | None, Tensor, Tensor, Tensor] | None = None  # (weakref to items, its version, keys, sorted, order)


def _row_keys(items: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact integer hashes of the bits of rows 1..N, sorted, and their order; cached for the last ``items``."""
    global _KEYS
    # inference tensors track no version, so an in-place edit could not be seen: never reuse theirs
    version = None if items.is_inference() else items._version
    if _KEYS is not None and _KEYS[0]() is items and version is not None and _KEYS[1] == version:
        return _KEYS[2:]
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[items.element_size()]
    bits = items[1:].contiguous().view(ints)  # (N, D)
    weights = (torch.arange(1, bits.shape[1] + 1, device=items.device) * 40503 | 1).to(ints)  # odd: every bit matters
    keys = (bits * weights).sum(1, dtype=torch.int64)  # products wrap in the items' width: still exact per row
    _KEYS = (weakref.ref(items), version, keys, *keys.sort())
    return _KEYS[2:]


def _target_copies(items: Tensor, targets: Tensor) -> Tensor | None:
    """(B, K) ids of the other items whose vector equals the target's bit for bit, 0 = none; None without any."""
    by_id, keys, order = _row_keys(items)
    mine = by_id[targets - 1]  # (B,) each target's key
    first = torch.searchsorted(keys, mine)
    count = torch.searchsorted(keys, mine, right=True) - first  # includes the target itself
    if int(count.max()) <= 1:
        return None
    slot = torch.arange(int(count.max()), device=items.device)
    ids = order[(first[:, None] + slot).clamp(max=len(order) - 1)] + 1  # (B, K) ids sharing the key
    same = (slot < count[:, None]) & (ids != targets[:, None]) & (items[ids] == items[targets][:, None]).all(-1)
    return torch.where(same, ids, 0)


def _target_scores(q: Tensor, items: Tensor, targets: Tensor) -> Tensor:
    """(B,) scores of the targets, computed by a matmul as the chunk scores are (to the last bit)."""
    parts = []
    for i in range(0, q.shape[0], _TARGET_BLOCK):
        block = items[targets[i : i + _TARGET_BLOCK]].float()  # (R, D)
        parts.append(torch.mm(q[i : i + _TARGET_BLOCK], block.T).diagonal())  # (R,)
    return torch.cat(parts) if parts else q.new_empty(0)


def _scored_chunks(
    q: Tensor,
    items: Tensor,
    chunk_size: int,
    drop: Tensor | None,
    fill: float,
    clamp_min: float | None = None,
) -> Iterator[tuple[int, int, Tensor]]:
    """Yields (lo, hi, s): s (B, hi - lo), one reused buffer, holds the scores of items lo..hi-1, drop ids at fill."""
    n = items.shape[0] - 1
    buf = q.new_empty(q.shape[0], min(chunk_size, n))  # (B, C)
    empty = torch.empty(0, dtype=torch.long, device=q.device)
    dropped = _split_by_chunk(drop, n, chunk_size) if drop is not None else None
    for k, lo in enumerate(range(1, n + 1, chunk_size)):
        hi = min(lo + chunk_size, n + 1)
        s = buf[:, : hi - lo]
        torch.mm(q, items[lo:hi].float().T, out=s)
        if clamp_min is not None:
            s.clamp_(min=clamp_min)
        rows, ids = dropped[k] if dropped is not None else (empty, empty)
        s[rows, ids - lo] = fill
        yield lo, hi, s


def _split_by_chunk(ids: Tensor, n: int, chunk_size: int) -> list[tuple[Tensor, Tensor]]:
    """Per item chunk, the (rows, ids) of the entries of ids (B, H) that fall in it; ids outside 1..n are dropped."""
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)  # (B, H)
    keep = (ids >= 1) & (ids <= n)
    ids, rows = ids[keep], rows[keep]  # (M,)
    order = ids.argsort()
    ids, rows = ids[order], rows[order]
    edges = torch.tensor([*range(1, n + 1, chunk_size), n + 1], device=ids.device)  # (K+1,)
    counts = torch.searchsorted(ids, edges).diff().tolist()
    return list(zip(rows.split(counts), ids.split(counts)))


def _padded(width: int) -> int:
    return -(-width // _PACK) * _PACK


def _count_greater(s: Tensor, threshold: Tensor, flags: Tensor) -> Tensor:
    """(B,) number of entries of each row of s (B, C) above its threshold (B,); flags is a (B, >= C) bool buffer.

    The flags are summed as int64 words, 8 per add, cheaper on CPU than a bool sum (benchmarks/cpu_choices.py).
    """
    rows, width = s.shape
    n_groups = _padded(width) // _PACK
    flags = flags[:, : n_groups * _PACK]  # (B, C')
    torch.gt(s, threshold[:, None], out=flags[:, :width])
    flags[:, width:] = False
    groups = flags.view(torch.int64).view(rows, n_groups, _WORDS_PER_GROUP).sum(2)  # (B, C'/_PACK), 8 byte lanes
    return groups.view(torch.uint8).view(rows, n_groups * 8).sum(1)
