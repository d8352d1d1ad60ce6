"""``nn.Dropout`` with its mask drawn by ``torch.rand`` (faster on CPU than ``bernoulli_``)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class _MaskedScale(torch.autograd.Function):
    """``x * keep / (1 - p)`` saving only the boolean mask for backward."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


class Dropout(nn.Dropout):
    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return _MaskedScale.apply(x, keep, 1.0 / (1.0 - self.p))
