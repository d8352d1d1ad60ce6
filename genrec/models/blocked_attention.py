"""HSTU's attention in query blocks: peak memory O(B·H·L·block) instead of O(B·H·L²).

Each block's bias and scores are built from the positions and times, and rebuilt in the backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Added to the scores of masked (future) keys: SiLU of it is exactly 0, and so is its gradient.
MASKED = -1e9


def buckets_(dt: Tensor, num_buckets: int, divisor: float = 0.301) -> Tensor:
    """int32 ``clamp(floor(ln(max(|dt|, 1)) / divisor), 0, num_buckets)`` of a float64 ``dt``, computed in place."""
    dt.abs_().clamp_(min=1).log_().div_(divisor).floor_().clamp_(0, num_buckets)
    return dt.to(torch.int32)


def _block_bias(pos_w: Tensor, time_w: Tensor | None, query_t: Tensor | None, key_t: Tensor | None,
                i0: int, i1: int, num_buckets: int, n: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Bias (1 or B, 1, b, i1) of queries ``[i0, i1)`` on keys ``[0, i1)``, the causal mask in it;
    also the position index, the time-bucket index (B, b, i1) or None, and the mask (b, i1)."""
    dev = pos_w.device
    qi, kj = torch.arange(i0, i1, device=dev)[:, None], torch.arange(i1, device=dev)[None, :]
    rel = qi - kj + n - 1
    masked = qi < kj
    bias = pos_w[rel].masked_fill(masked, MASKED)
    buckets = None
    if time_w is not None:
        buckets = buckets_(query_t[:, i0:i1, None] - key_t[:, None, :i1], num_buckets)  # (B, b, i1)
        bias = time_w[buckets] + bias
    return bias.unsqueeze(-3) if bias.dim() == 3 else bias[None, None], rel, buckets, masked


class _BlockedSiLUAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, pos_w: Tensor, time_w: Tensor | None,
                query_t: Tensor | None, key_t: Tensor | None, n: int, num_buckets: int, block: int) -> Tensor:
        B, H, L, _ = q.shape
        y = q.new_empty(B, H, L, v.shape[-1])
        for i0 in range(0, L, block):
            i1 = min(L, i0 + block)
            bias = _block_bias(pos_w, time_w, query_t, key_t, i0, i1, num_buckets, n)[0].to(q.dtype)
            scores = torch.matmul(q[:, :, i0:i1], k[:, :, :i1].transpose(-1, -2)).add_(bias)
            y[:, :, i0:i1] = F.silu(scores, inplace=True) @ v[:, :, :i1]
        ctx.save_for_backward(q, k, v, pos_w, time_w, query_t, key_t)
        ctx.n, ctx.num_buckets, ctx.block = n, num_buckets, block
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, pos_w, time_w, query_t, key_t = ctx.saved_tensors
        B, H, L, _ = q.shape
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        d_pos = torch.zeros(pos_w.shape[0], dtype=torch.float32, device=pos_w.device)
        d_time = torch.zeros(time_w.shape[0], dtype=torch.float32, device=pos_w.device) if time_w is not None else None
        for i0 in range(0, L, ctx.block):
            i1 = min(L, i0 + ctx.block)
            bias, rel, buckets, masked = _block_bias(pos_w, time_w, query_t, key_t, i0, i1, ctx.num_buckets, ctx.n)
            qb, kb, vb, g = q[:, :, i0:i1], k[:, :, :i1], v[:, :, :i1], grad[:, :, i0:i1]
            s = torch.matmul(qb, kb.transpose(-1, -2)).add_(bias.to(q.dtype))  # (B, H, b, i1)
            sig = torch.sigmoid(s)
            dv[:, :, :i1] += (s * sig).transpose(-1, -2) @ g
            ds = (g @ vb.transpose(-1, -2)).mul_(sig * (1 + s * (1 - sig)))  # d SiLU(s) / ds
            ds.masked_fill_(masked, 0.0)
            dq[:, :, i0:i1] = ds @ kb
            dk[:, :, :i1] += ds.transpose(-1, -2) @ qb
            d_bias = ds.sum(1, dtype=torch.float32)  # (B, b, i1)
            d_pos += torch.bincount(rel.reshape(-1), weights=d_bias.sum(0).reshape(-1), minlength=len(d_pos))
            if d_time is not None:
                d_time += torch.bincount(buckets.reshape(-1), weights=d_bias.reshape(-1), minlength=len(d_time))
        d_time = d_time.to(time_w.dtype) if d_time is not None else None
        return dq, dk, dv, d_pos.to(pos_w.dtype), d_time, None, None, None, None, None


def blocked_silu_attention(q: Tensor, k: Tensor, v: Tensor, pos_w: Tensor, time_w: Tensor | None,
                           query_t: Tensor | None, key_t: Tensor | None, n: int, num_buckets: int,
                           block: int = 256) -> Tensor:
    """``SiLU(Q Kᵀ + rab) V`` under the causal mask, (B, H, L, d) in and out, in query blocks.

    ``rab`` is ``pos_w[i - j + n - 1]`` plus, when ``time_w`` is given, ``time_w[bucket(query_t_i - key_t_j)]``
    (``query_t``, ``key_t``: (B, L) float64 times); the same values as ``HSTULayer``'s dense path.
    """
    if block < 1:
        raise ValueError(f"attention block must be at least 1 query, got {block}")
    if (time_w is None) != (query_t is None):
        raise ValueError("blocked_silu_attention: give time_w together with query_t and key_t, or none of them")
    return _BlockedSiLUAttention.apply(q, k, v, pos_w, time_w, query_t, key_t, n, num_buckets, block)
