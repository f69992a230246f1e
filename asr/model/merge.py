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

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_RATIO = 0.5  # a token merges with at most one neighbour per module
_NEG = float("-inf")


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


def _rank_within_groups(score: Tensor, group: Tensor, eligible: Tensor) -> Tensor:
    """Rank (0 = best) of every eligible entry among the eligible entries of its row and group,
    by descending score; ineligible entries get a rank past any budget."""
    big = torch.iinfo(torch.long).max // 4
    # Sort by group, then by descending score: score in [-1, 1] -> (1 - score) in [0, 2] < 4.
    key = group.to(torch.float64) * 4 + (1 - score.to(torch.float64))
    key = key.masked_fill(~eligible, float("inf"))
    order = key.argsort(dim=1, stable=True)
    sorted_group = group.gather(1, order)
    sorted_eligible = eligible.gather(1, order)
    positions = torch.arange(group.shape[1], device=group.device).expand_as(group)
    # the first sorted position of every group in the row
    first = torch.full_like(group, big).scatter_reduce(1, sorted_group, positions, reduce="amin", include_self=True)
    rank_sorted = positions - first.gather(1, sorted_group)
    rank_sorted = rank_sorted.masked_fill(~sorted_eligible, big)
    return torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)


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

    Works in rounds: every available pair that is a local maximum (>= its left neighbour pair,
    > its right one) is chosen at once, within what the budget leaves, and its neighbours become
    unavailable. This is greedy selection in descending order, vectorised.
    """
    available = pair_ok.clone()
    if threshold is not None:
        available &= similarity > threshold[:, None]
    chosen = torch.zeros_like(available)
    if budget is not None:
        if group is None:
            group = torch.zeros_like(similarity, dtype=torch.long)
        remaining = budget.clone()
        available &= remaining.gather(1, group) > 0
    while bool(available.any()):
        score = similarity.masked_fill(~available, _NEG)
        left = F.pad(score, (1, 0), value=_NEG)[:, :-1]
        right = F.pad(score, (0, 1), value=_NEG)[:, 1:]
        take = available & (score >= left) & (score > right)
        if budget is not None:
            rank = _rank_within_groups(similarity, group, take)
            take &= rank < remaining.gather(1, group)
            remaining = remaining - torch.zeros_like(remaining).scatter_add(1, group, take.long())
        chosen |= take
        blocked = take | F.pad(take, (1, 0))[:, :-1] | F.pad(take, (0, 1))[:, 1:]
        available &= ~blocked
        if budget is not None:
            available &= remaining.gather(1, group) > 0
    return chosen


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
