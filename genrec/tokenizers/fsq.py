"""Finite Scalar Quantization (Mentzer et al., 2023): each channel is bounded with ``tanh`` to ``levels[c]``
integer values and rounded (gradients pass straight through); a code's index is the mixed-radix number
its digits spell (channel 0 least significant).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

DEFAULT_LEVELS = (8, 8, 8, 6, 5)


def round_ste(z: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return z + (z.round() - z).detach()


class FSQ(nn.Module):
    """Quantizes the last dimension (size ``len(levels)``) of its input to values in [-1, 1]."""

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS, eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be integers >= 2 (got {levels})")
        self.levels = levels
        self.eps = eps
        lv = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), 0)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_width", (lv // 2), persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return int(torch.tensor(self.levels).prod())

    def bound(self, z: Tensor) -> Tensor:
        """Squash z so that rounding yields exactly ``levels[c]`` integers per channel (even levels: offset by half)."""
        half_l = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: Tensor) -> Tensor:
        """Quantized values in [-1, 1], same shape as z (..., len(levels))."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expects a last dimension of {self.dim} (levels {self.levels}), got {z.shape[-1]}")
        return round_ste(self.bound(z)) / self._half_width

    def codes_to_indices(self, values: Tensor) -> Tensor:
        """Quantized values (..., C) → code indices (...)."""
        digits = (values * self._half_width + self._half_width).round().long()
        return (digits * self._basis).sum(-1)

    def indices_to_digits(self, indices: Tensor) -> Tensor:
        """Code indices (...) → per-channel digits (..., C) in 0..levels[c]-1."""
        return (indices.long()[..., None] // self._basis) % self._levels.long()

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Code indices (...) → quantized values (..., C) in [-1, 1]."""
        return (self.indices_to_digits(indices).float() - self._half_width) / self._half_width

    def all_codes(self) -> Tensor:
        """Every code's values, row = index. (codebook_size, C)"""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self._basis.device))
