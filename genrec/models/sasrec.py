"""SASRec (Kang & McAuley, 2018) as the HSTU paper's baseline computes it: ``norm="pre"`` layer-norms only
the query (the original block), ``"post"`` is the classic block; ``positions="from_end"`` counts back from
the last item, as the original left-padded code did.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrec.errors import check_range


class SASRecBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, norm: str, attn_dropout: float):
        super().__init__()
        self.num_heads, self.norm, self.dropout_p = num_heads, norm, attn_dropout
        self.norm_attn = nn.LayerNorm(dim, eps=1e-8)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ffn = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)
        )
        self.dropout = nn.Dropout(dropout)

    def _attend(self, query_in: Tensor, kv_in: Tensor) -> Tensor:
        B, L, D = query_in.shape
        H = self.num_heads
        q = self.q(query_in).view(B, L, H, D // H).transpose(1, 2)  # (B, H, L, D/H)
        k, v = self.kv(kv_in).view(B, L, 2, H, D // H).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout_p if self.training else 0.0)
        return self.dropout(self.proj(y.transpose(1, 2).reshape(B, L, D)))

    def forward(self, x: Tensor) -> Tensor:
        if self.norm == "pre":
            q = self.norm_attn(x)
            x = self.norm_ffn(q + self._attend(q, x))
            return x + self.ffn(x)
        x = self.norm_attn(x + self._attend(x, x))
        return self.norm_ffn(x + self.ffn(x))


class SASRec(nn.Module):
    """SASRec encoder; ``attn_dropout`` (default ``dropout``) is on attention weights (docs/performance.md)."""

    def __init__(self, dim: int = 50, num_blocks: int = 2, num_heads: int = 1, ffn_dim: int | None = None,
                 dropout: float = 0.2, max_seq_len: int = 200, norm: Literal["pre", "post"] = "pre",
                 positions: Literal["from_end", "from_start"] = "from_start", attn_dropout: float | None = None):
        super().__init__()
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        sizes = dict(dim=dim, num_blocks=num_blocks, num_heads=num_heads, max_seq_len=max_seq_len,
                     ffn_dim=ffn_dim or 1)  # ffn_dim: 0 or null means dim
        for key, value in sizes.items():
            check_range(f"model.net.{key}", value, at_least=1)
        for key, value in (("dropout", dropout), ("attn_dropout", attn_dropout or 0.0)):
            check_range(f"model.net.{key}", value, at_least=0, below=1)
        if dim % num_heads:
            raise ValueError(f"SASRec dim {dim} must be divisible by num_heads {num_heads}")
        if norm not in ("pre", "post"):
            raise ValueError(f"SASRec norm must be 'pre' or 'post', got {norm!r}")
        if positions not in ("from_end", "from_start"):
            raise ValueError(f"SASRec positions must be 'from_end' or 'from_start', got {positions!r}")
        self.dim, self.max_seq_len, self.norm, self.positions = dim, max_seq_len, norm, positions
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        # as the HSTU code: the scale of the sqrt(d)-scaled item embeddings
        nn.init.trunc_normal_(self.pos_emb.weight, std=math.sqrt(1.0 / dim))
        self.input_dropout = nn.Dropout(dropout)
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.blocks = nn.ModuleList(SASRecBlock(dim, num_heads, ffn_dim or dim, dropout, norm, attn_dropout)
                                    for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(dim, eps=1e-8) if norm == "pre" else nn.Identity()

    def forward(self, x: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        if L > self.max_seq_len:
            raise ValueError(f"sequence length {L} exceeds SASRec max_seq_len {self.max_seq_len}")
        valid = (torch.arange(L, device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        steps = torch.arange(L, device=x.device)
        if self.positions == "from_end":
            pos = self.pos_emb((lengths[:, None] - 1 - steps[None]).clamp(min=0))  # (B, L, D)
        else:
            pos = self.pos_emb.weight[:L]
        h = self.input_dropout(x * math.sqrt(D) + pos) * valid
        for block in self.blocks:
            h = block(h) * valid
        return F.normalize(self.final_norm(h), dim=-1, eps=1e-6)
