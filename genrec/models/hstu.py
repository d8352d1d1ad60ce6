"""HSTU (Zhai et al., ICML 2024) as meta-recsys/generative-recommenders' research code computes it:

    x̂ = LayerNorm(x)
    U, V, Q, K = split(SiLU(Linear(x̂)))
    A = SiLU(Q Kᵀ + rab) / n ⊙ causal_mask          (no softmax; n = max_seq_len)
    y = x + Linear(Dropout(U ⊙ LayerNorm(A V)))

``rab``: learned relative-position and bucketed relative-time biases (query time: docs/evaluation.md).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrec.errors import check_range
from genrec.models.blocked_attention import MASKED, blocked_silu_attention, buckets_
from genrec.models.dropout import Dropout
from genrec.models.jagged_attention import JaggedLayout, jagged_silu_attention, pack, unpack


def time_buckets(dt: Tensor, num_buckets: int = 128, divisor: float = 0.301) -> Tensor:
    """Bucket index (int32) of a time difference: ``clamp(floor(ln(max(|dt|, 1)) / divisor), 0, num_buckets)``."""
    return buckets_(dt.to(torch.float64, copy=True), num_buckets, divisor)


class _BucketBias(torch.autograd.Function):
    """``w[idx] + base`` for an int32 index map; the backward is one weighted ``bincount`` (docs/performance.md)."""

    @staticmethod
    def forward(ctx, w: Tensor, idx: Tensor, base: Tensor) -> Tensor:
        ctx.save_for_backward(idx)
        ctx.size, ctx.base_shape = w.shape[0], base.shape
        return w.index_select(0, idx.reshape(-1)).view(idx.shape).add_(base)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, Tensor | None]:
        (idx,) = ctx.saved_tensors
        g = torch.bincount(idx.reshape(-1), weights=grad.reshape(-1).float(), minlength=ctx.size)
        g_base = grad.sum_to_size(ctx.base_shape) if ctx.needs_input_grad[2] else None
        return g.to(grad.dtype), None, g_base


class RelativeBias(nn.Module):
    """Learned bias indexed by relative position (i - j) and bucketed time difference."""

    def __init__(self, max_seq_len: int, num_buckets: int, use_time: bool = True):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.pos_w = nn.Parameter(torch.empty(2 * max_seq_len - 1).normal_(0, 0.02))
        self.time_w = nn.Parameter(torch.empty(num_buckets + 1).normal_(0, 0.02)) if use_time else None

    def forward(self, rel_pos: Tensor, buckets: Tensor | None, mask_bias: Tensor) -> Tensor:
        """(1, L, L) or (B, L, L) bias; ``mask_bias`` (L, L) is added to the position part."""
        bias = _BucketBias.apply(self.pos_w, rel_pos, mask_bias)  # (L, L)
        if self.time_w is None or buckets is None:
            return bias.unsqueeze(0)  # (1, L, L)
        return _BucketBias.apply(self.time_w, buckets, bias)  # (B, L, L)


def _silu_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """``SiLU(Q Kᵀ + bias) V`` with broadcasting: the attention core, (B, H, L, d) in and out."""
    return F.silu(q @ k.transpose(-1, -2) + bias) @ v


def _silu_attention_eager(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """The same through ``baddbmm``: the bias add happens inside the matmul's output pass."""
    B, H, L, da = q.shape
    if bias.shape[0] == 1 or H == 1:
        b = bias.reshape(-1, L, L)  # broadcasts over B x H, or already (B, L, L)
    else:
        b = bias.expand(B, H, L, L).reshape(B * H, L, L)
    scores = torch.baddbmm(b, q.reshape(B * H, L, da), k.reshape(B * H, L, da).transpose(1, 2))
    return (F.silu(scores) @ v.reshape(B * H, L, -1)).view(B, H, L, -1)


_compiled_attention = None


def silu_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, compiled: bool = False) -> Tensor:
    """``SiLU(Q Kᵀ + bias) V``, (B, H, L, d) in and out; bias (B or 1, 1, L, L) holds the causal mask."""
    global _compiled_attention
    if not compiled:
        return _silu_attention_eager(q, k, v, bias)
    if _compiled_attention is None:
        _compiled_attention = torch.compile(_silu_attention, dynamic=True)
    return _compiled_attention(q, k, v, bias)


class Positions(NamedTuple):
    """What every layer's relative bias is built from, once per batch (dense, blocked or jagged)."""

    mask_bias: Tensor | None = None
    rel: Tensor | None = None
    buckets: Tensor | None = None
    query_t: Tensor | None = None
    key_t: Tensor | None = None
    layout: JaggedLayout | None = None  # jagged: the packed row's query blocks and key windows


class HSTULayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_dim: int, linear_dim: int, dropout: float,
                 max_seq_len: int, num_buckets: int, use_time: bool, compile_attention: bool = False,
                 attention_block: int = 0):
        super().__init__()
        self.compile_attention, self.attention_block = compile_attention, attention_block
        self.num_buckets = num_buckets
        self.num_heads, self.attn_dim, self.linear_dim = num_heads, attn_dim, linear_dim
        self.norm_in = nn.LayerNorm(dim, eps=1e-6)
        self.uvqk = nn.Linear(dim, num_heads * (2 * linear_dim + 2 * attn_dim))
        self.norm_attn = nn.LayerNorm(num_heads * linear_dim, eps=1e-6)
        self.out = nn.Linear(num_heads * linear_dim, dim)
        self.dropout = Dropout(dropout)
        self.rab = RelativeBias(max_seq_len, num_buckets, use_time)
        self.max_seq_len = max_seq_len

    def forward(self, x: Tensor, pos: Positions) -> Tensor:
        B, L, _ = x.shape
        H, da, dl = self.num_heads, self.attn_dim, self.linear_dim
        uvqk = F.silu(self.uvqk(self.norm_in(x)))
        u, v, q, k = torch.split(uvqk, [H * dl, H * dl, H * da, H * da], dim=-1)
        q = q.view(B, L, H, da).transpose(1, 2)  # (B, H, L, da)
        k = k.view(B, L, H, da).transpose(1, 2)
        v = (v / self.max_seq_len).view(B, L, H, dl).transpose(1, 2)  # (B, H, L, dl); 1/n folded in
        if pos.layout is not None:
            y = jagged_silu_attention(q[0], k[0], v[0], self.rab.pos_w, self.rab.time_w, pos.layout)[None]
        elif self.attention_block:
            y = blocked_silu_attention(q, k, v, self.rab.pos_w, self.rab.time_w if pos.query_t is not None else None,
                                       pos.query_t, pos.key_t, self.max_seq_len, self.num_buckets, self.attention_block)
        else:
            bias = self.rab(pos.rel, pos.buckets, pos.mask_bias).unsqueeze(1)  # (B or 1, 1, L, L)
            y = silu_attention(q, k, v, bias, self.compile_attention)  # (B, H, L, dl)
        y = y.transpose(1, 2).reshape(B, L, H * dl)
        return x + self.out(self.dropout(u * self.norm_attn(y)))


@dataclass(frozen=True)
class TimeBias:
    """HSTU's bucketed relative-time attention bias.

    Args:
        enabled: add the bias (needs timestamps).
        num_buckets: buckets of the log time difference (``time_buckets``).
        query_time: ``target``: the last position's query time is the batch's ``query_time`` (else the
            last item's own time); ``last``: always the last item's own time.
    """

    enabled: bool = True
    num_buckets: int = 128
    query_time: Literal["target", "last"] = "target"

    def __post_init__(self) -> None:
        check_range("model.net.time_bias.num_buckets", self.num_buckets, at_least=1)
        if self.query_time not in ("target", "last"):
            raise ValueError(f"HSTU time_bias.query_time must be 'target' or 'last', got {self.query_time!r}")


class HSTU(nn.Module):
    """HSTU encoder.

    Args:
        dim: item embedding width d.
        num_blocks: depth.
        num_heads: attention heads.
        attn_dim: per-head width of Q/K (default d / heads).
        linear_dim: per-head width of U/V (default d / heads).
        dropout: on inputs and on each layer's output projection.
        max_seq_len: longest input; also the attention normaliser n.
        time_bias: the relative-time bias (``TimeBias``).
        attention: ``dense``, ``compiled`` (through ``torch.compile``), ``blocked`` (query blocks, memory
            linear in L) or ``jagged`` (sequences packed without padding); docs/performance.md.
        attention_block: queries per block of ``attention: blocked`` and ``jagged``.
    """

    def __init__(self, dim: int = 50, num_blocks: int = 2, num_heads: int = 1, attn_dim: int | None = None,
                 linear_dim: int | None = None, dropout: float = 0.2, max_seq_len: int = 200,
                 time_bias: TimeBias = TimeBias(),
                 attention: Literal["dense", "compiled", "blocked", "jagged"] = "dense",
                 attention_block: int = 256):
        super().__init__()
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.init_args["time_bias"] = asdict(time_bias)  # a checkpoint holds no genrec classes
        # attn_dim / linear_dim: 0 or null means dim // num_heads
        sizes = dict(dim=dim, num_blocks=num_blocks, max_seq_len=max_seq_len,
                     attn_dim=attn_dim or 1, linear_dim=linear_dim or 1)
        for key, value in sizes.items():
            check_range(f"model.net.{key}", value, at_least=1)
        check_range("model.net.num_heads", num_heads, at_least=1, at_most=dim)
        check_range("model.net.dropout", dropout, at_least=0, below=1)
        attn_dim = attn_dim or dim // num_heads
        linear_dim = linear_dim or dim // num_heads
        self.dim, self.max_seq_len, self.num_time_buckets = dim, max_seq_len, time_bias.num_buckets
        self.use_time_bias, self.query_time = time_bias.enabled, time_bias.query_time
        if attention not in ("dense", "compiled", "blocked", "jagged"):
            raise ValueError(f"HSTU attention must be 'dense', 'compiled', 'blocked' or 'jagged', got {attention!r}")
        if attention_block < 1:
            raise ValueError(f"HSTU attention_block must be at least 1 query, got {attention_block}")
        self.attention = attention
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        nn.init.normal_(self.pos_emb.weight, std=math.sqrt(1.0 / dim))
        self.input_dropout = Dropout(dropout)
        block = attention_block if attention in ("blocked", "jagged") else 0
        self.layers = nn.ModuleList(HSTULayer(dim, num_heads, attn_dim, linear_dim, dropout, max_seq_len,
                                              time_bias.num_buckets, time_bias.enabled, attention == "compiled", block)
                                    for _ in range(num_blocks))
        self._mask_cache: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}

    def _masks(self, L: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Causal mask as an additive bias and the relative-position index, cached per (length, device)."""
        key = (L, device)
        if key not in self._mask_cache:
            idx = torch.arange(L, device=device)
            rel = (idx[:, None] - idx[None, :] + self.max_seq_len - 1).int()  # (L, L)
            mask_bias = torch.zeros(L, L, device=device).masked_fill_(idx[:, None] < idx[None, :], MASKED)
            self._mask_cache[key] = (mask_bias, rel)
        return self._mask_cache[key]

    def _query_times(self, timestamps: Tensor, lengths: Tensor, query_time: Tensor | None = None) -> Tensor:
        """(B, L) float64 query times: position i's is the time of item i+1; the last valid
        position's is ``query_time`` when given, else its own."""
        B, L = timestamps.shape
        nxt = torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1)
        last = (torch.arange(L, device=timestamps.device)[None, :] >= (lengths - 1)[:, None])
        if query_time is None or self.query_time == "last":
            last_t = timestamps.gather(1, (lengths - 1).clamp(min=0)[:, None])
        else:
            last_t = query_time.to(timestamps.dtype)[:, None]
        return torch.where(last, last_t.expand(B, L), nxt).to(torch.float64)

    def _time_buckets(self, timestamps: Tensor, lengths: Tensor, query_time: Tensor | None = None) -> Tensor:
        """int32 (B, L, L) buckets of query time minus key time (as ``time_buckets``)."""
        q, k = self._query_times(timestamps, lengths, query_time), timestamps.to(torch.float64)
        return buckets_(q[:, :, None] - k[:, None, :], self.num_time_buckets, 0.301)

    def forward(self, x: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        if L > self.max_seq_len:
            raise ValueError(f"sequence length {L} exceeds HSTU max_seq_len {self.max_seq_len}")
        if self.attention == "jagged":
            return self._forward_jagged(x, timestamps, lengths, query_time)
        valid = (torch.arange(L, device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, L, 1)
        h = x * math.sqrt(D) + self.pos_emb.weight[:L]
        h = self.input_dropout(h) * valid
        if self.attention == "blocked":
            times = self.use_time_bias
            pos = Positions(query_t=self._query_times(timestamps, lengths, query_time) if times else None,
                            key_t=timestamps.to(torch.float64) if times else None)
        else:
            mask_bias, rel = self._masks(L, x.device)
            pos = Positions(mask_bias, rel, self._time_buckets(timestamps, lengths, query_time) if self.use_time_bias else None)
        for layer in self.layers:
            h = layer(h, pos)
        return F.normalize(h, dim=-1, eps=1e-6)

    @property
    def packed(self) -> bool:
        """Whether the module should hand this net packed sequences (``forward_packed``)."""
        return self.attention == "jagged"

    def _forward_jagged(self, x: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor | None) -> Tensor:
        """``forward_packed`` of the valid positions; zeros at the padding of the (B, L, D) output."""
        B, L, D = x.shape
        at, offsets = pack(lengths, L)
        h = self.forward_packed(x.reshape(B * L, D).index_select(0, at), timestamps.reshape(-1)[at], offsets, query_time)
        return unpack(h, at, B, L)

    def forward_packed(self, x: Tensor, timestamps: Tensor, offsets: Tensor, query_time: Tensor | None = None) -> Tensor:
        """(T, D) user states of sequences packed back to back, sequence b at ``[offsets[b], offsets[b + 1])``."""
        T, D = x.shape
        lengths = offsets[1:] - offsets[:-1]
        if len(lengths) and int(lengths.max()) > self.max_seq_len:
            raise ValueError(f"sequence length {int(lengths.max())} exceeds HSTU max_seq_len {self.max_seq_len}")
        segments = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), lengths)
        positions = torch.arange(T, device=x.device) - offsets[segments]
        h = self.input_dropout(x * math.sqrt(D) + self.pos_emb.weight.index_select(0, positions))[None]  # (1, T, D)
        query_t = key_t = None
        if self.use_time_bias:
            key_t = timestamps.to(torch.float64)
            last = torch.zeros(T, dtype=torch.bool, device=x.device)
            last[offsets[1:][lengths > 0] - 1] = True
            own_last = key_t[(offsets[1:] - 1).clamp(min=0)]
            final = query_time.to(torch.float64) if query_time is not None and self.query_time == "target" else own_last
            query_t = torch.where(last, final[segments], torch.cat([key_t[1:], key_t[-1:]]))
        layout = JaggedLayout.build(segments, query_t, key_t, self.layers[0].attention_block, self.max_seq_len,
                                    self.num_time_buckets, self.layers[0].num_heads)
        pos = Positions(layout=layout)
        for layer in self.layers:
            h = layer(h, pos)
        return F.normalize(h[0], dim=-1, eps=1e-6)
