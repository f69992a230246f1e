"""Helpers for fixed-size, per-stream caches along a time dimension."""
from __future__ import annotations

import torch
from torch import Tensor


def take_window(x: Tensor, start: Tensor, size: int, dim: int) -> Tensor:
    """Per batch row b, the slice x[b, ..., start[b] : start[b] + size, ...] along `dim`.

    x: (B, ...), start: (B,) int64. Every window must lie inside x.
    """
    steps = torch.arange(size, device=x.device)
    index = start.to(x.device)[:, None] + steps  # (B, size)
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], size
    index = index.view(shape).expand(*[size if d == dim else s for d, s in enumerate(x.shape)])
    return torch.gather(x, dim, index)


def append_and_trim(cache: Tensor, new: Tensor, new_lens: Tensor, dim: int) -> Tensor:
    """Append the first new_lens[b] entries of `new` to `cache` and keep the last L per stream.

    cache: (B, ..., L, ...) and new: (B, ..., T, ...) along `dim`; returns (B, ..., L, ...).
    Padding past new_lens (a short last chunk) never enters the cache.
    """
    size = cache.shape[dim]
    joined = torch.cat([cache, new.to(cache.dtype)], dim=dim)
    return take_window(joined, new_lens, size, dim)


def right_aligned_slots(keep: Tensor, width: int) -> Tensor:
    """(B, N) slot of every entry where `keep` is True when the kept entries are packed, in order,
    against the right end of `width` slots; dropped entries get the spare slot `width`. Every row
    keeps at most `width`."""
    target = width - keep.sum(1, keepdim=True) + keep.long().cumsum(1) - 1
    return torch.where(keep, target, torch.full_like(target, width))


def scatter_right(x: Tensor, slots: Tensor, width: int, dim: int) -> Tensor:
    """x: (B, ..., N, ...) placed along `dim` into `width` slots by `right_aligned_slots`; zeros elsewhere."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], x.shape[dim]
    index = slots.view(shape).expand_as(x)
    out_shape = list(x.shape)
    out_shape[dim] = width + 1
    return x.new_zeros(out_shape).scatter(dim, index, x).narrow(dim, 0, width)
