"""Decoder-only transformer over item tokens after RecGPT (2025): L items of T FSQ tokens are one stream,
attending bidirectionally within an item and causally across items (docs/generative.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrec.tokenizers.fsq import DEFAULT_LEVELS, FSQ


class HybridBlock(nn.Module):
    """Pre-norm transformer block; the boolean mask (True = may attend) is given by the caller."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, S, D = x.shape
        H = self.num_heads
        q, k, v = self.qkv(self.norm1(x)).view(B, S, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, S, D/H)
        # no dropout on attention weights: with a mask, SDPA's CPU path would draw a (B, H, S, S) mask each step
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.dropout(self.proj(y.transpose(1, 2).reshape(B, S, D)))
        return x + self.ffn(self.norm2(x))


@dataclass
class DecoderConfig:
    """The generative model's decoder (``GenerativeDecoder``).

    Args:
        dim: model width.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``dim``).
        ffn_dim: feed-forward width (default ``4 * dim``).
        dropout: dropout rate.
        max_seq_len: longest history in items (must cover the data module's ``max_seq_len``).
        text_input: add a projection of each history item's text embedding to its tokens.
        codes: ``value+text`` embeds a code by its FSQ values, digits and text chunk; ``text`` by the
            text chunk alone; ``text-rotated`` also rotates the text space in training (docs/generative.md).
    """

    dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int | None = None
    dropout: float = 0.1
    max_seq_len: int = 50
    text_input: bool = True
    codes: Literal["value+text", "text", "text-rotated"] = "value+text"

    def __post_init__(self) -> None:
        for key in ("dim", "num_layers", "num_heads", "max_seq_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.decoder.{key} must be at least 1, got {getattr(self, key)}")
        if self.dim % self.num_heads:
            raise ValueError(f"model.decoder.dim {self.dim} must be divisible by model.decoder.num_heads {self.num_heads}")
        if self.ffn_dim is not None and self.ffn_dim < 1:
            raise ValueError(f"model.decoder.ffn_dim must be at least 1 (or null for 4 * dim), got {self.ffn_dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.decoder.dropout must be in [0, 1), got {self.dropout}")
        if self.codes not in ("value+text", "text", "text-rotated"):
            raise ValueError(f"model.decoder.codes must be 'value+text', 'text' or 'text-rotated', got {self.codes!r}")


class GenerativeDecoder(nn.Module):
    """Item-token sequence model: ``forward`` encodes histories, ``next_queries``/``step_query`` and
    ``code_table`` give next-item token logits."""

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS, num_tokens: int = 4, text_dim: int = 384,
                 config: DecoderConfig = DecoderConfig(), feature_dim: int = 0):
        super().__init__()
        dim, num_heads, dropout, max_seq_len = config.dim, config.num_heads, config.dropout, config.max_seq_len
        code_identity = config.codes == "value+text"
        if not code_identity and not feature_dim:
            raise ValueError(f"model.decoder.codes={config.codes!r} embeds codes by their text features only: feature_dim must be > 0")
        self.code_identity = code_identity
        self.num_tokens, self.max_seq_len, self.dim = num_tokens, max_seq_len, dim
        self.fsq = FSQ(levels)
        # per-code-value embedding; left out (None) with code_identity=False, so no parameter goes unused
        self.code_mlp = nn.Sequential(nn.Linear(self.fsq.dim, dim), nn.GELU(), nn.Linear(dim, dim)) if code_identity else None
        self.digit_emb = nn.Embedding(sum(self.fsq.levels), dim) if code_identity else None
        self.register_buffer("_digit_offset", torch.tensor([0, *self.fsq.levels[:-1]]).cumsum(0), persistent=False)
        self.slot_emb = nn.Embedding(num_tokens, dim)
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        self.text_proj = nn.Linear(text_dim, dim) if config.text_input else None
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(HybridBlock(dim, num_heads, config.ffn_dim or 4 * dim, dropout) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(dim)
        self.prefix_proj = nn.Linear(dim, dim)
        self.query_norm = nn.LayerNorm(dim)
        self.heads = nn.Parameter(torch.eye(dim).repeat(num_tokens, 1, 1))  # (T, D, D): one query map per slot
        self.feature_dim = feature_dim
        if feature_dim:
            self.feat_proj = nn.Parameter(torch.randn(num_tokens, feature_dim, dim))  # unit-norm features → O(1) entries
            self.register_buffer("code_features", torch.zeros(num_tokens, 0, feature_dim), persistent=False)
        self._masks: dict[tuple, Tensor] = {}
        self.rotation: Tensor | None = None  # (T, F, F) per-chunk rotation of the text space, training only
        if code_identity:
            nn.init.normal_(self.digit_emb.weight, std=0.02)

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    def code_embed(self, codes: Tensor) -> Tensor:
        """Code indices (…) → vectors (…, D), learned per code value (``code_identity``)."""
        if self.code_mlp is None:
            raise RuntimeError("this decoder has no per-code embedding (code_identity=False)")
        digits = self.fsq.indices_to_digits(codes) + self._digit_offset  # (…, C)
        return self.code_mlp(self.fsq.indices_to_codes(codes)) + self.digit_emb(digits).sum(-2)

    def set_code_features(self, features: Tensor) -> None:
        """Fixed features of every code at every token position: (T, V, feature_dim), unit rows."""
        if features.shape != (self.num_tokens, self.codebook_size, self.feature_dim):
            raise ValueError(f"code features must be (T, V, F) = {(self.num_tokens, self.codebook_size, self.feature_dim)}, got {tuple(features.shape)}")
        self.code_features = features.to(self.heads.device)

    def token_embed(self, codes: Tensor, first_slot: int = 0) -> Tensor:
        """Codes (…, t) at token positions first_slot.. → token vectors (…, t, D)."""
        slots = torch.arange(first_slot, first_slot + codes.shape[-1], device=codes.device)
        e = self.slot_emb(slots).expand(*codes.shape, self.dim)
        if self.code_identity:
            e = e + self.code_embed(codes)
        if self.feature_dim:
            if self.code_features.shape[1] == 0:
                raise RuntimeError("code features are not set: call set_code_features (the module does, with its catalogue)")
            feats = self.code_features[slots, codes]  # (…, t, F)
            proj = self.feat_proj[slots]
            if self.rotation is not None:  # features R f: the same as projecting f by R^T P
                proj = torch.einsum("tgf,tgd->tfd", self.rotation[slots], proj)
            e = e + torch.einsum("...tf,tfd->...td", feats, proj)
        return e

    def set_rotation(self, rotation: Tensor | None) -> None:
        """Multiply chunk t of every text input and code feature by the orthogonal ``rotation[t]`` (T, F, F)."""
        if rotation is not None:
            if self.code_identity:
                raise ValueError("rotating the text space needs code_identity=False: code values are not rotated")
            expected = (self.num_tokens, self.feature_dim, self.feature_dim)
            if rotation.shape != expected:
                raise ValueError(f"rotation must be (T, F, F) = {expected}, got {tuple(rotation.shape)}")
            if self.text_proj is not None and self.text_proj.in_features != self.num_tokens * self.feature_dim:
                raise ValueError(f"rotating the text input needs text_dim = T * feature_dim, got {self.text_proj.in_features}")
        self.rotation = rotation

    def code_table(self, codes: Tensor, slot: int) -> Tensor:
        """Output embeddings of ``codes`` (K,) at token position ``slot``. (K, D)"""
        return self.token_embed(codes[:, None], slot)[:, 0]

    def hybrid_mask(self, num_items: int, device: torch.device) -> Tensor:
        """(L*T, L*T) bool, True where query token may attend to key token; cached per shape."""
        key = (num_items, self.num_tokens, str(device))
        if key not in self._masks:
            item = torch.arange(num_items * self.num_tokens, device=device) // self.num_tokens  # (S,)
            self._masks[key] = item[None, :] <= item[:, None]
        return self._masks[key]

    def forward(self, codes: Tensor, text: Tensor | None, lengths: Tensor) -> Tensor:
        """States of every token of every history item. codes (B, L, T), text (B, L, E) → (B, L, T, D)."""
        B, L, T = codes.shape
        if L > self.max_seq_len:
            raise ValueError(f"history of {L} items exceeds the model's max_seq_len {self.max_seq_len}")
        x = self.token_embed(codes) + self.pos_emb.weight[:L, None]  # (B, L, T, D)
        if self.text_proj is not None:
            if text is None:
                raise ValueError("this model takes item text embeddings as input (text_input=True); pass them")
            text = text.float()
            if self.rotation is not None:  # chunk t of every text embedding rotated by R_t
                text = torch.einsum("bltf,tgf->bltg", text.view(B, L, T, -1), self.rotation).reshape(B, L, -1)
            x = x + self.text_proj(text)[:, :, None]
        h = self.input_dropout(x).reshape(B, L * T, self.dim)  # (B, S, D)
        mask = self.hybrid_mask(L, codes.device)
        for block in self.blocks:
            h = block(h, mask)
        valid = (torch.arange(L, device=codes.device)[None] < lengths[:, None])[..., None, None]  # (B, L, 1, 1)
        return self.final_norm(h).view(B, L, T, self.dim) * valid

    def _queries(self, state: Tensor, prefix_sum: Tensor, slots: slice) -> Tensor:
        q = self.query_norm(state + self.prefix_proj(prefix_sum))  # (…, t, D)
        # 1/sqrt(D) keeps initial logits small, so training starts near a uniform code distribution
        return torch.einsum("...td,tde->...te", q, self.heads[slots]) / self.dim ** 0.5

    def next_queries(self, state: Tensor, target: Tensor) -> Tensor:
        """Teacher-forced queries for the next item's T tokens: state (M, T, D), target (M, T) → (M, T, D)."""
        e = self.token_embed(target)  # (M, T, D)
        before = e.cumsum(1) - e  # sum over the tokens before each slot
        return self._queries(state, before, slice(None))

    def step_query(self, state: Tensor, prefix: Tensor) -> Tensor:
        """Query of token t = prefix.shape[-1]: state (…, D) of slot t, prefix (…, t) codes → (…, D)."""
        t = prefix.shape[-1]
        before = self.token_embed(prefix).sum(-2) if t else torch.zeros_like(state)
        return self._queries(state[..., None, :], before[..., None, :], slice(t, t + 1))[..., 0, :]


def random_rotations(num: int, dim: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """``num`` Haar-random orthogonal (dim, dim) matrices: QR of Gaussian matrices, signs fixed. (num, dim, dim)"""
    q, r = torch.linalg.qr(torch.randn(num, dim, dim, generator=generator))
    return (q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]).to(device)
