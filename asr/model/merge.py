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
    allowed per group, with group: (B, P) long in [0, G) the group of every pair; two pairs that
    share a token must be in the same group (groups are runs of whole chunks). Returns (B, P) bool;
    no two chosen pairs share a token.

    The result is that of the greedy pass: in descending similarity (ties: leftmost first) a pair
    is taken unless a token of it is already taken or its group's budget is spent. It is computed
    without that sequential loop, in a fixed number of tensor operations and no host sync, so on a
    GPU it stays on the device and in the launch queue:
    - Without budgets, pairs form a path in which each pair conflicts with its two neighbours. A
      pair that beats both available neighbours (a peak) is taken. A pair beaten by one neighbour
      only is decided when that neighbour is: taken iff that neighbour is not. Along a monotone run
      away from a peak the answer alternates, so it is taken iff its distance to the run's peak is
      even. A pair beaten by both (a valley) is taken iff neither neighbour is.
    - A budget only cuts the greedy pass short, and pairs of different groups never conflict, so
      the budgeted result is the `budget` most similar pairs of each group's unbudgeted result.
    """
    batch, num = similarity.shape
    if num == 0:
        return pair_ok.clone()
    device = similarity.device
    sim = similarity.detach().float()
    avail = pair_ok.clone()
    if threshold is not None:
        avail &= sim > threshold.detach().float()[:, None]
    false = torch.zeros(batch, 1, dtype=torch.bool, device=device)
    left_av = torch.cat([false, avail[:, :-1]], 1)  # the pair to the left exists and is available
    right_av = torch.cat([avail[:, 1:], false], 1)
    left_sim = F.pad(sim[:, :-1], (1, 0))
    right_sim = F.pad(sim[:, 1:], (0, 1))
    beats_left = ~left_av | (sim > left_sim)  # ties go to the left pair
    beats_right = ~right_av | (sim >= right_sim)
    peak = avail & beats_left & beats_right
    up_right = avail & beats_left & ~beats_right  # beaten by its right neighbour only
    up_left = avail & ~beats_left & beats_right
    valley = avail & ~beats_left & ~beats_right
    index = torch.arange(num, device=device).expand(batch, num)
    # distance to the peak: a run of up_right pairs ends at the first pair on its right that is not
    peak_right = torch.where(up_right, num, index).flip(1).cummin(1).values.flip(1)
    peak_left = torch.where(up_left, -1, index).cummax(1).values
    taken = peak | up_right & ((peak_right - index) % 2 == 0) | up_left & ((index - peak_left) % 2 == 0)
    left_taken = torch.cat([false, taken[:, :-1]], 1)
    right_taken = torch.cat([taken[:, 1:], false], 1)
    taken = taken | valley & ~left_taken & ~right_taken
    if budget is None:
        return taken
    # rank every taken pair within its group by (similarity desc, position asc); keep rank < budget
    num_groups = budget.shape[1]
    group = group if group is not None else torch.zeros_like(index)
    key_group = torch.where(taken, group, num_groups)  # pairs not taken sort after every group
    order = torch.sort(torch.where(taken, sim, -2.0), dim=1, descending=True, stable=True).indices
    order = order.gather(1, torch.sort(key_group.gather(1, order), dim=1, stable=True).indices)
    sorted_group = key_group.gather(1, order)
    counts = torch.zeros(batch, num_groups + 1, dtype=torch.long, device=device).scatter_add_(
        1, key_group, torch.ones_like(key_group))
    group_first = counts.cumsum(1) - counts  # position of each group's first pair in the sort
    rank = index - group_first.gather(1, sorted_group)
    allowed = F.pad(budget.long(), (0, 1)).gather(1, sorted_group)  # the spare group allows nothing
    keep_sorted = (rank < allowed) & (sorted_group < num_groups)
    return torch.zeros_like(taken).scatter(1, order, keep_sorted)


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
    num_groups = max(num, 1)  # an upper bound, known without reading the device
    counts = torch.zeros(start.shape[0], num_groups, dtype=torch.long, device=start.device)
    counts.scatter_add_(1, token_group, real.long())
    budget = torch.floor(counts.to(torch.float64) * ratio.to(torch.float64)[:, None] + 0.5).long()
    return budget, token_group[:, :-1]


def merge_tokens(
    x: Tensor, lens: Tensor, start: Tensor, size: Tensor, chosen: Tensor, width: int | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Merge every chosen pair (i, i+1) into one token: the size-weighted mean of the two.

    x: (B, T, D); lens: (B,); start, size: (B, T) long; chosen: (B, T-1) bool, non-overlapping.
    width: the longest row after merging when the caller already read it from the device.
    Returns x', lens', start', size' with tokens packed to the left and zero padding.
    """
    batch, num, dim = x.shape
    real = torch.arange(num, device=x.device)[None] < lens[:, None]
    absorbed = F.pad(chosen, (1, 0)) & real  # token j joins token j-1
    keep = real & ~absorbed
    new_lens = keep.sum(1)
    if width is None:
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
