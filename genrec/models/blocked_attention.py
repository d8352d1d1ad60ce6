"""HSTU's attention in query blocks: peak memory O(B·H·L·block) instead of O(B·H·L²).

The dense path (``genrec.models.hstu``) builds the (B, L, L) relative bias once per batch and the
(B, H, L, L) scores per layer, and autograd keeps them for the backward pass. Here the queries are
taken ``block`` at a time; a block of queries ``[i0, i1)`` only sees keys ``[0, i1)`` (causal), and
its relative-position and relative-time bias is built for that block alone, from the positions and
the (B, L) query and key times. Nothing of size L² is kept: the backward pass rebuilds each block's
bias and scores from q, k, v and the times (recomputation, as FlashAttention does), so its cost is
one more forward pass over the blocks. Gradients of the bias tables are one weighted ``bincount``
per block, as the dense path's ``_BucketBias`` does.

Jagged batches: with ``segments`` the (1, T) row holds several sequences packed back to back
(no padding). A query then sees only earlier keys of its own sequence, and a block of queries
reads keys from the start of its first query's sequence on, so the work is about Σ nᵢ² + T·block
instead of B·L² for the padded batch. Relative positions are differences of packed indices, which
within one sequence are the differences of positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Added to the scores of masked (future) keys: SiLU of it is exactly 0, and so is its gradient.
MASKED = -1e9


def buckets_(dt: Tensor, num_buckets: int, divisor: float = 0.301) -> Tensor:
    """HSTU's time bucket ``clamp(floor(ln(max(|dt|, 1)) / divisor), 0, num_buckets)`` of a float64
    tensor, overwriting it in place (one allocation less on an L² map); exact for integer times
    below 2**53. int32 out."""
    dt.abs_().clamp_(min=1).log_().div_(divisor).floor_().clamp_(0, num_buckets)
    return dt.to(torch.int32)


def _block_bias(pos_w: Tensor, time_w: Tensor | None, query_t: Tensor | None, key_t: Tensor | None,
                i0: int, i1: int, lo: int, n: int, num_buckets: int,
                segments: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Bias (1 or B, 1, b, i1 - lo) of queries ``[i0, i1)`` on keys ``[lo, i1)``, the causal (and
    other-sequence) mask in it; also the position index, the time-bucket index (B, b, i1 - lo) or
    None, and the mask (b, i1 - lo)."""
    dev = pos_w.device
    qi, kj = torch.arange(i0, i1, device=dev)[:, None], torch.arange(lo, i1, device=dev)[None, :]
    rel = qi - kj + n - 1
    masked = qi < kj
    if segments is not None:  # packed sequences: keys of other sequences are masked too
        masked |= segments[i0:i1, None] != segments[None, lo:i1]
        rel = rel.clamp_(0, 2 * n - 2)  # masked pairs may lie further apart than any sequence
    bias = pos_w[rel].masked_fill(masked, MASKED)
    buckets = None
    if time_w is not None:
        buckets = buckets_(query_t[:, i0:i1, None] - key_t[:, None, lo:i1], num_buckets)  # (B, b, i1 - lo)
        bias = time_w[buckets] + bias
    return bias.unsqueeze(-3) if bias.dim() == 3 else bias[None, None], rel, buckets, masked


def _blocks(L: int, block: int, starts: Tensor | None):
    """(i0, i1, lo): query blocks and the first key each reads (its first query's sequence start)."""
    first = starts[::block].tolist() if starts is not None else None
    for b, i0 in enumerate(range(0, L, block)):
        yield i0, min(L, i0 + block), first[b] if first is not None else 0


class _BlockedSiLUAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, pos_w: Tensor, time_w: Tensor | None,
                query_t: Tensor | None, key_t: Tensor | None, segments: Tensor | None, starts: Tensor | None,
                n: int, num_buckets: int, block: int) -> Tensor:
        B, H, L, _ = q.shape
        y = q.new_empty(B, H, L, v.shape[-1])
        for i0, i1, lo in _blocks(L, block, starts):
            bias = _block_bias(pos_w, time_w, query_t, key_t, i0, i1, lo, n, num_buckets, segments)[0].to(q.dtype)
            scores = torch.matmul(q[:, :, i0:i1], k[:, :, lo:i1].transpose(-1, -2)).add_(bias)
            y[:, :, i0:i1] = F.silu(scores, inplace=True) @ v[:, :, lo:i1]
        ctx.save_for_backward(q, k, v, pos_w, time_w, query_t, key_t, segments, starts)
        ctx.n, ctx.num_buckets, ctx.block = n, num_buckets, block
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, pos_w, time_w, query_t, key_t, segments, starts = ctx.saved_tensors
        B, H, L, _ = q.shape
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        d_pos = torch.zeros(pos_w.shape[0], dtype=torch.float32, device=pos_w.device)
        d_time = torch.zeros(time_w.shape[0], dtype=torch.float32, device=pos_w.device) if time_w is not None else None
        for i0, i1, lo in _blocks(L, ctx.block, starts):
            bias, rel, buckets, masked = _block_bias(pos_w, time_w, query_t, key_t, i0, i1, lo, ctx.n,
                                                     ctx.num_buckets, segments)
            qb, kb, vb, g = q[:, :, i0:i1], k[:, :, lo:i1], v[:, :, lo:i1], grad[:, :, i0:i1]
            s = torch.matmul(qb, kb.transpose(-1, -2)).add_(bias.to(q.dtype))  # (B, H, b, i1 - lo)
            sig = torch.sigmoid(s)
            dv[:, :, lo:i1] += (s * sig).transpose(-1, -2) @ g
            ds = (g @ vb.transpose(-1, -2)).mul_(sig * (1 + s * (1 - sig)))  # d SiLU(s) / ds
            ds.masked_fill_(masked, 0.0)
            dq[:, :, i0:i1] = ds @ kb
            dk[:, :, lo:i1] += ds.transpose(-1, -2) @ qb
            d_bias = ds.sum(1, dtype=torch.float32)  # (B, b, i1 - lo)
            d_pos += torch.bincount(rel.reshape(-1), weights=d_bias.sum(0).reshape(-1), minlength=len(d_pos))
            if d_time is not None:
                d_time += torch.bincount(buckets.reshape(-1), weights=d_bias.reshape(-1), minlength=len(d_time))
        d_time = d_time.to(time_w.dtype) if d_time is not None else None
        return dq, dk, dv, d_pos.to(pos_w.dtype), d_time, None, None, None, None, None, None, None


def blocked_silu_attention(q: Tensor, k: Tensor, v: Tensor, pos_w: Tensor, time_w: Tensor | None,
                           query_t: Tensor | None, key_t: Tensor | None, n: int, num_buckets: int,
                           block: int = 256, segments: Tensor | None = None) -> Tensor:
    """``SiLU(Q Kᵀ + rab) V`` under the causal mask, (B, H, L, d) in and out, in query blocks.

    ``rab`` is ``pos_w[i - j + n - 1]`` plus, when ``time_w`` is given, ``time_w[bucket(query_t_i - key_t_j)]``
    (``query_t``, ``key_t``: (B, L) float64 times); the same values as ``HSTULayer``'s dense path.
    ``segments``: (L,) non-decreasing sequence index of each position of a packed (B = 1) row; a
    query then attends only to its own sequence.
    """
    if block < 1:
        raise ValueError(f"attention block must be at least 1 query, got {block}")
    if (time_w is None) != (query_t is None):
        raise ValueError("blocked_silu_attention: give time_w together with query_t and key_t, or none of them")
    starts = None
    if segments is not None:
        if q.shape[0] != 1 or segments.shape != (q.shape[2],):
            raise ValueError(f"packed sequences are one row: q {tuple(q.shape)} with segments {tuple(segments.shape)}")
        first = torch.ones_like(segments, dtype=torch.bool)
        first[1:] = segments[1:] != segments[:-1]
        starts = torch.cummax(torch.where(first, torch.arange(len(segments), device=segments.device), 0), 0).values
    return _BlockedSiLUAttention.apply(q, k, v, pos_w, time_w, query_t, key_t, segments, starts, n, num_buckets, block)
