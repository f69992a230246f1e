"""Dropout whose mask costs half as much on CPU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Module):
    """nn.Dropout, same distribution and scaling. On CPU, `bernoulli_` (what nn.Dropout draws its mask
    with) takes about twice as long as `rand_like` (5.2 vs 2.5 ms for 15 x 100 x 576 on 2 cores), and
    a small model's training step spent 18% of its time there. Other devices keep the fused kernel."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = torch.rand_like(x, dtype=torch.float32) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
