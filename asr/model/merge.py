"""Adjacent token merging (A-ToMe) for a chunked streaming encoder.

A merge module looks at the attention keys of one Conformer block, takes the cosine similarity of
each token with its right neighbour (keys averaged over heads, before rotary positions), picks
non-overlapping adjacent pairs, and replaces each pair by its size-weighted mean. Every token
carries the span of encoder frames it covers (`start`, `size`), so merges chain across modules
(one token may come to cover many frames: an adaptive frame rate) and timestamps stay exact.

Two modes pick the pairs, each with one value per request row:
- threshold: every pair whose similarity exceeds the value (1.0 merges nothing), as many as
  non-overlap allows, the most similar first;
- ratio: exactly round(value * n) pairs in each group of n tokens (a chunk when streaming, the
  whole utterance at full context), the most similar first; exact for value <= 1/3, where greedy
  selection can never run out of disjoint pairs, and as many as fit above it (at most 1/2).

Pairs never cross a chunk boundary, so a chunk's merges depend only on that chunk and its left
context: streaming equals the offline pass under the same chunk mask.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_RATIO = 0.5  # a token merges with at most one neighbour per module


def adjacent_similarity(keys: Tensor) -> Tensor:
    """keys (B, T, Dk) -> (B, T-1) cosine similarity of each token with its right neighbour."""
    keys = F.normalize(keys.float(), dim=-1)
    return (keys[:, :-1] * keys[:, 1:]).sum(-1).clamp(-1.0, 1.0)  # so a threshold of 1.0 merges nothing


def mergeable_pairs(lens: Tensor, start: Tensor, chunk_size: int) -> Tensor:
    """(B, T-1) bool: pair (i, i+1) is made of two real tokens of the same chunk."""
    num = start.shape[1]
    real = torch.arange(num, device=start.device)[None] < lens[:, None]
    ok = real[:, :-1] & real[:, 1:]
    if chunk_size > 0:
        chunk = torch.div(start, chunk_size, rounding_mode="floor")
        ok = ok & (chunk[:, :-1] == chunk[:, 1:])
    return ok


def select_pairs(
    similarity: Tensor,
    pair_ok: Tensor,
    threshold: Tensor | None = None,
    budget: Tensor | None = None,
    group: Tensor | None = None,
) -> Tensor:
    """Non-overlapping adjacent pairs to merge, most similar first.

    similarity, pair_ok: (B, P). threshold: (B,) pairs must exceed it. budget: (B, G) merges
    allowed per group, with group: (B, P) long in [0, G) the group of every pair. Returns (B, P)
    bool; no two chosen pairs share a token.

    Greedy in descending similarity: a pair is taken unless a token of it is already taken or its
    group's budget is spent. Selection is discrete (no gradient flows through it) and tiny (a
    chunk holds a handful of pairs), so it runs on the host in one pass: on a GPU that is one
    copy, where a vectorised version needs several rounds of small kernels and a sync per round.
    """
    sim = similarity.detach().float().cpu().numpy()
    available = pair_ok.detach().cpu().numpy().copy()
    if threshold is not None:
        available &= sim > threshold.detach().float().cpu().numpy()[:, None]
    chosen = np.zeros_like(available)
    remaining = budget.detach().cpu().numpy().copy() if budget is not None else None
    groups = (group.detach().cpu().numpy() if group is not None else np.zeros(sim.shape, dtype=np.int64)) \
        if budget is not None else None
    for row in range(sim.shape[0]):
        candidates = np.flatnonzero(available[row])
        if candidates.size == 0:
            continue
        order = candidates[np.argsort(-sim[row, candidates], kind="stable")]  # ties: leftmost first
        used = np.zeros(sim.shape[1] + 1, dtype=bool)  # token i is in a chosen pair
        for pair in order.tolist():
            if used[pair] or used[pair + 1]:
                continue
            if remaining is not None:
                g = groups[row, pair]
                if remaining[row, g] <= 0:
                    continue
                remaining[row, g] -= 1
            used[pair] = used[pair + 1] = True
            chosen[row, pair] = True
    return torch.from_numpy(chosen).to(similarity.device)


def ratio_budget(lens: Tensor, start: Tensor, chunk_size: int, ratio: Tensor) -> tuple[Tensor, Tensor]:
    """Merges allowed per group (chunk, or whole row at full context) and the group of each pair.

    Returns budget (B, G) = round(ratio * real tokens of the group) and group (B, T-1) of each pair
    (the group of its left token), groups numbered from the row's first token.
    """
    num = start.shape[1]
    real = torch.arange(num, device=start.device)[None] < lens[:, None]
    if chunk_size > 0:
        chunk = torch.div(start, chunk_size, rounding_mode="floor")
        token_group = (chunk - chunk[:, :1]).clamp(min=0).masked_fill(~real, 0)
    else:
        token_group = torch.zeros_like(start)
    num_groups = int(token_group.max()) + 1 if num else 1
    counts = torch.zeros(start.shape[0], num_groups, dtype=torch.long, device=start.device)
    counts.scatter_add_(1, token_group, real.long())
    budget = torch.floor(counts.to(torch.float64) * ratio.to(torch.float64)[:, None] + 0.5).long()
    return budget, token_group[:, :-1]


def merge_tokens(
    x: Tensor, lens: Tensor, start: Tensor, size: Tensor, chosen: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Merge every chosen pair (i, i+1) into one token: the size-weighted mean of the two.

    x: (B, T, D); lens: (B,); start, size: (B, T) long; chosen: (B, T-1) bool, non-overlapping.
    Returns x', lens', start', size' with tokens packed to the left and zero padding.
    """
    batch, num, dim = x.shape
    real = torch.arange(num, device=x.device)[None] < lens[:, None]
    absorbed = F.pad(chosen, (1, 0)) & real  # token j joins token j-1
    keep = real & ~absorbed
    new_lens = keep.sum(1)
    width = int(new_lens.max()) if batch else 0
    # An absorbed token has the same running count as its left partner: same new index.
    index = torch.where(real, keep.long().cumsum(1) - 1, torch.full_like(start, width))  # padding -> spare slot
    weight = size.to(x.dtype).masked_fill(~real, 0)
    summed = x.new_zeros(batch, width + 1, dim).scatter_add(1, index[..., None].expand(-1, -1, dim),
                                                           x * weight[..., None])
    total = x.new_zeros(batch, width + 1).scatter_add(1, index, weight)
    merged = (summed / total.clamp(min=1e-6)[..., None])[:, :width]
    new_size = torch.zeros(batch, width + 1, dtype=size.dtype, device=x.device).scatter_add(
        1, index, size.masked_fill(~real, 0))[:, :width]
    first = torch.where(keep, index, torch.full_like(index, width))  # the kept token opens its span
    new_start = torch.zeros(batch, width + 1, dtype=start.dtype, device=x.device).scatter(1, first, start)[:, :width]
    new_real = torch.arange(width, device=x.device)[None] < new_lens[:, None]
    return merged * new_real[..., None], new_lens, new_start.masked_fill(~new_real, 0), new_size
