"""Multi-head self-attention with rotary positions and an optional key/value cache."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Rotary position angles for absolute (possibly fractional) positions.

    Angles are computed in float64 so that a one-hour stream (~90k frames) loses no precision,
    and so that the streaming pass (small absolute offsets per chunk) and the offline pass (one
    long sequence) rotate every frame identically.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions: (B, T) -> cos, sin: (B, 1, T, Dh) in `dtype`."""
        angles = positions.to(torch.float64)[..., None] * self.inv_freq  # (B, T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, Dh)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, H, T, Dh) rotated by the angles in cos/sin (B, 1, T, Dh)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor,
        cache_key: Tensor,
        cache_value: Tensor,
        key_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """
        x: (B, T, D); rotary: cos/sin (B, 1, T, Dh) for the T new frames;
        mask: (B, T, L + T) bool, True where a query may attend to a key;
        cache_key/cache_value: (B, H, L, Dh), keys already rotated (L may be 0);
        key_bias: (B, L + T) added to every query's logit for that key (log token size:
        proportional attention), or None.
        Returns y (B, T, D), the keys/values of the new frames (B, H, T, Dh), and their keys
        before rotary (B, H, T, Dh): what token merging compares.
        """
        batch, frames, _ = x.shape
        q, k, v = self.qkv(x).view(batch, frames, 3, self.num_heads, self.head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        raw_key = k
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        keys = torch.cat([cache_key.to(k.dtype), k], dim=2)  # (B, H, L + T, Dh)
        values = torch.cat([cache_value.to(v.dtype), v], dim=2)
        attn_mask = mask[:, None]
        if key_bias is not None:
            bias = key_bias.to(q.dtype)[:, None, None, :]  # (B, 1, 1, L + T)
            attn_mask = torch.where(attn_mask, bias, torch.finfo(q.dtype).min)
        y = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(batch, frames, self.num_heads * self.head_dim)
        return self.out(y), k, v, raw_key
