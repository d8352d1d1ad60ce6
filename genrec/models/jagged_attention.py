"""HSTU's attention over jagged batches (sequences packed back to back, no padding) in query blocks that
read only their own sequences' earlier keys, batched in chunks of bounded size (docs/performance.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genrec.models.blocked_attention import MASKED, buckets_

# Score elements (per head) of one chunk, and of the bias indices kept for the whole batch.
CHUNK_ELEMENTS = 1 << 22
CACHE_ELEMENTS = 1 << 24


@dataclass
class _Chunk:
    b0: int  # first query block
    b1: int  # one past the last
    width: int  # keys in every block's window
    cached: tuple[Tensor, Tensor | None, Tensor, Tensor] | None = None  # rel, buckets, masked, keys


@dataclass
class JaggedLayout:
    """Query blocks of one packed row and the key windows they read; built once per batch.

    ``segments`` (T,): the sequence of each packed position (non-decreasing); ``query_t`` / ``key_t``
    (T,) float64 times for the relative-time bias, or None without it.
    """

    segments: Tensor
    query_t: Tensor | None
    key_t: Tensor | None
    block: int
    n: int  # HSTU's max_seq_len: relative positions index pos_w[i - j + n - 1]
    num_buckets: int
    lo: Tensor  # (blocks,) first key of each block's window
    chunks: list[_Chunk]

    @classmethod
    def build(cls, segments: Tensor, query_t: Tensor | None, key_t: Tensor | None, block: int, n: int,
              num_buckets: int, heads: int = 1) -> "JaggedLayout":
        if block < 1:
            raise ValueError(f"attention block must be at least 1 query, got {block}")
        if (query_t is None) != (key_t is None):
            raise ValueError("JaggedLayout: give query_t together with key_t, or neither")
        T = len(segments)
        first = torch.ones_like(segments, dtype=torch.bool)
        first[1:] = segments[1:] != segments[:-1]
        starts = torch.cummax(torch.where(first, torch.arange(T, device=segments.device), 0), 0).values
        lo = starts[::block]
        ends = torch.clamp(torch.arange(1, len(lo) + 1, device=lo.device) * block, max=T)
        widths = (ends - lo).tolist()
        chunks, b0, width = [], 0, 0
        budget = max(1, CHUNK_ELEMENTS // heads)
        for b, w in enumerate(widths):
            if b > b0 and (b + 1 - b0) * block * max(width, w) > budget:
                chunks.append(_Chunk(b0, b, width))
                b0, width = b, 0
            width = max(width, w)
        chunks.append(_Chunk(b0, len(widths), width))
        layout = cls(segments, query_t, key_t, block, n, num_buckets, lo, chunks)
        if sum((c.b1 - c.b0) * block * c.width for c in chunks) <= CACHE_ELEMENTS:
            for c in chunks:
                c.cached = layout._indices(c)
        return layout

    def _indices(self, c: _Chunk) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Chunk ``c``'s int32 position index and time buckets, its mask (blocks, block, width), and
        the packed index of every key of its windows (blocks, width), clamped into the row."""
        if c.cached is not None:
            return c.cached
        T, dev = len(self.segments), self.segments.device
        qi = torch.arange(c.b0 * self.block, c.b1 * self.block, device=dev).view(-1, self.block)  # (nb, block)
        kj = self.lo[c.b0:c.b1, None] + torch.arange(c.width, device=dev)  # (nb, width)
        qc, kc = qi.clamp(max=T - 1), kj.clamp(max=T - 1)
        masked = (qi[:, :, None] < kj[:, None, :]) | (qi >= T)[:, :, None]
        masked |= self.segments[qc][:, :, None] != self.segments[kc][:, None, :]
        rel = (qi[:, :, None] - kj[:, None, :] + self.n - 1).clamp_(0, 2 * self.n - 2).int()
        buckets = None
        if self.query_t is not None:
            buckets = buckets_(self.query_t[qc][:, :, None] - self.key_t[kc][:, None, :], self.num_buckets)
        return rel, buckets, masked, kc

    def bias(self, c: _Chunk, pos_w: Tensor, time_w: Tensor | None, dtype: torch.dtype):
        """Chunk ``c``'s bias (blocks, block, width) with the mask in it, and its indices."""
        rel, buckets, masked, keys = self._indices(c)
        # int32 index_select: several times faster on CPU than advanced indexing
        bias = pos_w.index_select(0, rel.reshape(-1)).view(rel.shape).masked_fill_(masked, MASKED)
        if time_w is not None and buckets is not None:
            bias += time_w.index_select(0, buckets.reshape(-1)).view(buckets.shape)
        return bias.to(dtype), rel, buckets, masked, keys


class _JaggedSiLUAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, pos_w: Tensor, time_w: Tensor | None,
                layout: JaggedLayout) -> Tensor:
        H, T, da = q.shape
        bl = layout.block
        qp = F.pad(q, (0, 0, 0, -T % bl))  # (H, T', da): whole blocks
        y = q.new_empty(H, qp.shape[1], v.shape[-1])
        for c in layout.chunks:
            bias, _, _, _, keys = layout.bias(c, pos_w, time_w, q.dtype)
            nb = c.b1 - c.b0
            qb = qp[:, c.b0 * bl:c.b1 * bl].view(H, nb, bl, da)
            kg = k.index_select(1, keys.reshape(-1)).view(H, nb, c.width, da)
            vg = v.index_select(1, keys.reshape(-1)).view(H, nb, c.width, -1)
            scores = torch.matmul(qb, kg.transpose(-1, -2)).add_(bias)  # (H, nb, block, width)
            y[:, c.b0 * bl:c.b1 * bl] = (F.silu(scores, inplace=True) @ vg).view(H, nb * bl, -1)
        ctx.save_for_backward(q, k, v, pos_w, time_w)
        ctx.layout = layout
        return y[:, :T]

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, pos_w, time_w = ctx.saved_tensors
        layout = ctx.layout
        H, T, da = q.shape
        bl = layout.block
        qp, gp = F.pad(q, (0, 0, 0, -T % bl)), F.pad(grad, (0, 0, 0, -T % bl))
        dq, dk, dv = torch.zeros_like(qp), torch.zeros_like(k), torch.zeros_like(v)
        d_pos = torch.zeros(pos_w.shape[0], dtype=torch.float32, device=q.device)
        d_time = torch.zeros(time_w.shape[0], dtype=torch.float32, device=q.device) if time_w is not None else None
        for c in layout.chunks:
            bias, rel, buckets, masked, keys = layout.bias(c, pos_w, time_w, q.dtype)
            nb, flat = c.b1 - c.b0, keys.reshape(-1)
            qb = qp[:, c.b0 * bl:c.b1 * bl].view(H, nb, bl, da)
            g = gp[:, c.b0 * bl:c.b1 * bl].view(H, nb, bl, -1)
            kg = k.index_select(1, flat).view(H, nb, c.width, da)
            vg = v.index_select(1, flat).view(H, nb, c.width, -1)
            s = torch.matmul(qb, kg.transpose(-1, -2)).add_(bias)
            sig = torch.sigmoid(s)
            dv.index_add_(1, flat, ((s * sig).transpose(-1, -2) @ g).view(H, nb * c.width, -1))
            ds = (g @ vg.transpose(-1, -2)).mul_(sig * (1 + s * (1 - sig)))  # d SiLU(s) / ds
            ds.masked_fill_(masked, 0.0)
            dq[:, c.b0 * bl:c.b1 * bl] = (ds @ kg).view(H, nb * bl, da)
            dk.index_add_(1, flat, (ds.transpose(-1, -2) @ qb).view(H, nb * c.width, da))
            d_bias = ds.sum(0, dtype=torch.float32).reshape(-1)  # (nb * block * width,)
            d_pos += torch.bincount(rel.reshape(-1), weights=d_bias, minlength=len(d_pos))
            if d_time is not None:
                d_time += torch.bincount(buckets.reshape(-1), weights=d_bias, minlength=len(d_time))
        d_time = d_time.to(time_w.dtype) if d_time is not None else None
        return dq[:, :T], dk, dv, d_pos.to(pos_w.dtype), d_time, None


def jagged_silu_attention(q: Tensor, k: Tensor, v: Tensor, pos_w: Tensor, time_w: Tensor | None,
                          layout: JaggedLayout) -> Tensor:
    """``SiLU(Q Kᵀ + rab) V`` of packed sequences, (H, T, d) in and out: each query attends to the
    earlier keys of its own sequence. ``rab`` as ``HSTULayer``'s dense path (``time_w`` None: no
    time bias); ``layout`` from ``JaggedLayout.build`` for this batch."""
    if q.shape[1] != len(layout.segments):
        raise ValueError(f"packed attention: q has {q.shape[1]} positions, the layout {len(layout.segments)}")
    return _JaggedSiLUAttention.apply(q, k, v, pos_w, time_w if layout.query_t is not None else None, layout)


def pack(lengths: Tensor, L: int) -> tuple[Tensor, Tensor]:
    """Indices into a flattened (B, L) batch of its valid positions (row-major), and the sequences'
    offsets into the packed row (sequence b at ``[offsets[b], offsets[b + 1])``). ((T,), (B + 1,))"""
    at = (torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]).reshape(-1).nonzero().squeeze(1)
    return at, F.pad(lengths.cumsum(0), (1, 0))


def unpack(values: Tensor, at: Tensor, B: int, L: int) -> Tensor:
    """Packed rows (T, ...) back into a (B, L, ...) batch at ``at`` (``pack``'s), zeros elsewhere."""
    return values.new_zeros(B * L, *values.shape[1:]).index_copy(0, at, values).view(B, L, *values.shape[1:])
