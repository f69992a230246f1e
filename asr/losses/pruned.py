"""Pruned RNN-T loss (Kuang et al., 2022), after k2's design; see shared/notes/pruned-rnnt.md.

1. A *simple* loss from a trivial additive joiner ``am[t] + lm[s]`` is cheap on the whole lattice.
2. Its occupation probabilities (gradients of its log-likelihood wrt px/py) pick, per frame, a
   window of ``s_range`` token positions holding most of the alignment mass.
3. The real joiner runs only inside those windows: B*T*s_range*V logits instead of B*T*(S+1)*V.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from asr.losses.rnnt import (
    NEG_LARGE,
    REDUCTIONS,
    check_finite,
    clean_targets,
    compute_dtype,
    reduce_loss,
    rnnt_lattice_logprob,
    validate_lengths,
    validate_targets_and_lengths,
)

Joiner = Callable[[Tensor, Tensor], Tensor]  # (enc (B,T,R,J), dec (B,T,R,J)) -> logits (B,T,R,V)


class SimpleLossOutput(NamedTuple):
    """A NamedTuple rather than a dataclass so callers can write ``loss, px, py = simple_loss(...)``."""

    loss: Tensor  # reduced simple loss; (B,) for reduction="none"
    px: Tensor  # (B, S, T) token log-probs of the simple lattice, in the autograd graph
    py: Tensor  # (B, S+1, T) blank log-probs of the simple lattice, in the autograd graph


@dataclass(frozen=True)
class PrunedLossOutput:
    simple: Tensor  # reduced simple loss
    pruned: Tensor  # reduced pruned loss
    ranges: Tensor  # (B, T, s_range) int64 token positions kept per frame


def simple_lattice(
    am: Tensor, lm: Tensor, targets: Tensor, blank_id: int, lm_only_scale: float = 0.0, am_only_scale: float = 0.0
) -> tuple[Tensor, Tensor]:
    """px (B, S, T) and py (B, S+1, T) of the additive joiner ``logit[t, s] = am[t] + lm[s]``.

    am: (B, T, V), lm: (B, S+1, V), targets: (B, S) (padding is clamped into range; the recursion
    masks it). With smoothing, the log-probs are mixed linearly with lm-only (log_softmax(lm)) and
    am-only (log_softmax(am)) lattices; k2's am-only term also adds a unigram LM, ours does not.
    """
    dtype = compute_dtype(am.dtype)
    am, lm = am.to(dtype), lm.to(dtype)
    batch, num_frames, vocab_size = am.shape
    max_target_len = targets.shape[1]
    tokens = targets.long().clamp(0, vocab_size - 1)  # (B, S)
    # log sum_v exp(am[t, v] + lm[s, v]) as one matmul in exp space: never builds (B, T, S+1, V).
    # The maxima are constants for the value, so detaching them changes no gradient.
    am_max = am.detach().amax(dim=-1, keepdim=True)  # (B, T, 1)
    lm_max = lm.detach().amax(dim=-1, keepdim=True)  # (B, S+1, 1)
    products = torch.matmul((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2))  # (B, S+1, T)
    # `tiny` keeps log finite when the two distributions peak on disjoint tokens and exp underflows.
    normaliser = (products + torch.finfo(dtype).tiny).log() + lm_max + am_max.transpose(1, 2)

    am_tokens = am.gather(-1, tokens[:, None, :].expand(batch, num_frames, max_target_len)).transpose(1, 2)
    lm_tokens = lm[:, :max_target_len].gather(-1, tokens[:, :, None])  # (B, S, 1)
    px = am_tokens + lm_tokens - normaliser[:, :max_target_len]  # (B, S, T)
    py = am[:, None, :, blank_id] + lm[:, :, blank_id, None] - normaliser  # (B, S+1, T)
    if lm_only_scale == 0.0 and am_only_scale == 0.0:
        return px, py

    lm_log_probs, am_log_probs = lm.log_softmax(dim=-1), am.log_softmax(dim=-1)
    px_lm = lm_log_probs[:, :max_target_len].gather(-1, tokens[:, :, None])  # (B, S, 1)
    py_lm = lm_log_probs[:, :, blank_id, None]  # (B, S+1, 1)
    px_am = am_log_probs.gather(-1, tokens[:, None, :].expand(batch, num_frames, max_target_len))
    px_am = px_am.transpose(1, 2)  # (B, S, T)
    py_am = am_log_probs[:, None, :, blank_id]  # (B, 1, T)
    joint_scale = 1.0 - lm_only_scale - am_only_scale
    px = joint_scale * px + lm_only_scale * px_lm + am_only_scale * px_am
    py = joint_scale * py + lm_only_scale * py_lm + am_only_scale * py_am
    return px, py


def lattice_logprob_with_occupation(
    px: Tensor, py: Tensor, frame_lens: Tensor, target_lens: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Log-likelihood (B,) and its gradients wrt px (B, S, T) and py (B, S+1, T).

    The gradients are the posterior occupation of each arc. They come from one autograd.grad on
    detached copies; the returned log-likelihood is re-attached with exactly those gradients
    (value ll, d ll/d px = occupation), so training on it does not run the recursion's backward
    a second time.
    """
    px_leaf, py_leaf = px.detach().requires_grad_(), py.detach().requires_grad_()
    with torch.enable_grad():
        log_likelihood = rnnt_lattice_logprob(px_leaf, py_leaf, frame_lens, target_lens)
        px_occupation, py_occupation = torch.autograd.grad(log_likelihood.sum(), (px_leaf, py_leaf))
    attached = (
        log_likelihood.detach()
        + (px_occupation * (px - px.detach())).sum(dim=(1, 2))
        + (py_occupation * (py - py.detach())).sum(dim=(1, 2))
    )
    return attached, px_occupation, py_occupation


def _validate_simple_inputs(
    am: Tensor, lm: Tensor, targets: Tensor, frame_lens: Tensor, target_lens: Tensor, blank_id: int, reduction: str
) -> None:
    if am.ndim != 3 or lm.ndim != 3 or am.shape[0] != lm.shape[0] or am.shape[2] != lm.shape[2]:
        raise ValueError(f"am must be (B, T, V) and lm (B, S+1, V), got {tuple(am.shape)} and {tuple(lm.shape)}")
    if targets.ndim != 2 or lm.shape[1] != targets.shape[1] + 1 or targets.shape[0] != am.shape[0]:
        raise ValueError(f"lm (B, S+1, V)={tuple(lm.shape)} does not match targets (B, S)={tuple(targets.shape)}")
    validate_targets_and_lengths(targets, frame_lens, target_lens, am.shape[1], am.shape[2], blank_id)
    check_finite("am", am)
    check_finite("lm", lm)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def simple_loss(
    am: Tensor,
    lm: Tensor,
    targets: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    blank_id: int = 0,
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
    reduction: str = "sum",
) -> SimpleLossOutput:
    """RNN-T loss of the additive joiner; am (B, T, V), lm (B, S+1, V). See :func:`simple_lattice`.

    px and py are returned inside the graph, so ``torch.autograd.grad(-loss.sum(), (px, py),
    retain_graph=True)`` gives the arc occupations for :func:`get_prune_ranges`.
    """
    _validate_simple_inputs(am, lm, targets, frame_lens, target_lens, blank_id, reduction)
    px, py = simple_lattice(am, lm, targets, blank_id, lm_only_scale, am_only_scale)
    loss = -rnnt_lattice_logprob(px, py, frame_lens, target_lens)
    return SimpleLossOutput(reduce_loss(loss, reduction), px, py)


def _constrain_window_starts(s_begin: Tensor, frame_lens: Tensor, target_lens: Tensor, s_range: int) -> Tensor:
    """Adjust preferred window starts (B, T) so the pruned lattice still holds a complete path.

    Result: s_begin[0] = 0, non-decreasing, steps of at most s_range-1 (consecutive windows overlap,
    so a blank can carry a path from one frame's window into the next), every start inside
    [0, max(0, S_b+1-s_range)], and the last real frame's window (and every padding frame's) ends at S_b.
    """
    num_frames = s_begin.shape[1]
    step = s_range - 1
    frames = torch.arange(num_frames, device=s_begin.device)
    latest = (target_lens[:, None] + 1 - s_range).clamp(min=0)  # (B, 1) last start that still fits
    bad = latest[:, 0] > (frame_lens - 1) * step
    if bool(bad.any()):
        raise ValueError(
            f"target_lens {target_lens[bad].tolist()} cannot be reached in frame_lens "
            f"{frame_lens[bad].tolist()} with s_range={s_range}: need target_lens <= (s_range-1)*frame_lens"
        )
    # Frame t can start no later than t*step: that is as far as a path from (0, 0) moves.
    upper = torch.minimum(latest, frames * step)  # (B, T)
    last_or_padding = frames >= frame_lens[:, None] - 1
    s_begin = torch.minimum(torch.where(last_or_padding, upper, s_begin), upper)
    s_begin = s_begin.cummax(dim=1).values
    # Raise earlier starts where the next one jumps too far: s[t] = max_{u >= t} s[u] - step*(u-t),
    # a reversed cummax on s[u] - step*u. It keeps the order, the caps and s[0] = 0.
    tilted = (s_begin - frames * step).flip(1)
    return tilted.cummax(dim=1).values.flip(1) + frames * step


def get_prune_ranges(
    px_grad: Tensor, py_grad: Tensor, frame_lens: Tensor, target_lens: Tensor, s_range: int
) -> Tensor:
    """Token positions to keep per frame, (B, T, s_range) int64, as consecutive windows.

    px_grad (B, S, T) and py_grad (B, S+1, T) are arc occupations of the simple lattice; a node's
    mass is the sum of its outgoing arcs. Each frame prefers the window with the most mass, then
    :func:`_constrain_window_starts` makes the windows form a connected lattice.
    """
    batch, max_target_len, num_frames = px_grad.shape
    if py_grad.shape != (batch, max_target_len + 1, num_frames):
        raise ValueError(
            f"py_grad must be (B, S+1, T), got {tuple(py_grad.shape)} for px_grad (B, S, T)={tuple(px_grad.shape)}"
        )
    if s_range < 2:
        raise ValueError(f"s_range must be >= 2 so a path can advance, got {s_range}")
    validate_lengths(frame_lens, target_lens, batch, num_frames, max_target_len)
    frame_lens, target_lens = frame_lens.long().to(px_grad.device), target_lens.long().to(px_grad.device)
    if s_range >= max_target_len + 1:
        s_begin = torch.zeros(batch, num_frames, dtype=torch.long, device=px_grad.device)
    else:
        node_mass = py_grad.detach().clone()  # (B, S+1, T)
        node_mass[:, :max_target_len] += px_grad.detach()
        cumulative = torch.nn.functional.pad(node_mass.cumsum(dim=1), (0, 0, 1, 0))  # (B, S+2, T)
        window_mass = cumulative[:, s_range:] - cumulative[:, :-s_range]  # (B, S+2-R, T) by start
        s_begin = window_mass.argmax(dim=1)  # (B, T)
    s_begin = _constrain_window_starts(s_begin, frame_lens, target_lens, s_range)
    return s_begin[:, :, None] + torch.arange(s_range, device=s_begin.device)


def _scatter_window(values: Tensor, ranges: Tensor, valid: Tensor, num_rows: int) -> Tensor:
    """Place window values (B, T, R) at rows `ranges` of a (B, num_rows, T) lattice of NEG_LARGE.

    Invalid slots go to one trash row per slot (num_rows + r), so no two slots of a frame ever
    write the same row; scatter with duplicate indices would be nondeterministic.
    """
    batch, num_frames, s_range = values.shape
    trash = num_rows + torch.arange(s_range, device=ranges.device)
    rows = torch.where(valid, ranges, trash)  # (B, T, R)
    values = torch.where(valid, values, NEG_LARGE)
    buffer = values.new_full((batch, num_frames, num_rows + s_range), NEG_LARGE)
    return buffer.scatter(2, rows, values)[:, :, :num_rows].transpose(1, 2)  # (B, num_rows, T)


def _validate_pruned_inputs(am_proj: Tensor, lm_proj: Tensor, targets: Tensor, ranges: Tensor) -> None:
    if am_proj.ndim != 3 or lm_proj.ndim != 3 or targets.ndim != 2 or ranges.ndim != 3:
        raise ValueError("am_proj must be (B, T, J), lm_proj (B, S+1, J), targets (B, S), ranges (B, T, R)")
    batch, num_frames, _ = am_proj.shape
    if lm_proj.shape[:2] != (batch, targets.shape[1] + 1) or targets.shape[0] != batch:
        raise ValueError(f"lm_proj {tuple(lm_proj.shape)} must be (B, S+1, J) for targets {tuple(targets.shape)}")
    if ranges.shape[:2] != (batch, num_frames) or ranges.is_floating_point():
        raise ValueError(f"ranges must be integer (B, T, R)=({batch}, {num_frames}, R), got {tuple(ranges.shape)}")
    # Consecutive windows are what makes the trash-row scatter collision-free.
    if bool((ranges[..., 0] < 0).any()) or bool((ranges.diff(dim=-1) != 1).any()):
        raise ValueError("ranges must hold non-negative consecutive windows s_begin + arange(R)")


def pruned_loss(
    joiner: Joiner,
    am_proj: Tensor,
    lm_proj: Tensor,
    targets: Tensor,
    ranges: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    blank_id: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """RNN-T loss with the real joiner evaluated only at `ranges` (B, T, R).

    am_proj (B, T, J) and lm_proj (B, S+1, J) are already projected encoder/predictor outputs.
    Arcs outside the windows get NEG_LARGE, so the result is >= the exact loss, equal to it
    when the windows cover [0, S].
    """
    _validate_pruned_inputs(am_proj, lm_proj, targets, ranges)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    batch, num_frames, _ = am_proj.shape
    max_target_len, s_range = targets.shape[1], ranges.shape[2]
    ranges = ranges.long()
    rows = ranges.clamp(max=max_target_len)  # windows may overhang S when S+1 < s_range; masked below
    batch_index = torch.arange(batch, device=am_proj.device)[:, None, None]
    dec = lm_proj[batch_index, rows]  # (B, T, R, J)
    enc = am_proj[:, :, None, :].expand(batch, num_frames, s_range, am_proj.shape[-1])  # (B, T, R, J)
    logits = joiner(enc, dec)  # (B, T, R, V)
    validate_targets_and_lengths(targets, frame_lens, target_lens, num_frames, logits.shape[-1], blank_id)
    check_finite("joiner logits", logits)

    log_probs = logits.to(compute_dtype(logits.dtype)).log_softmax(dim=-1)  # (B, T, R, V)
    frame_lens, target_lens = frame_lens.long().to(logits.device), target_lens.long().to(logits.device)
    tokens = clean_targets(targets, target_lens, blank_id)
    tokens = torch.nn.functional.pad(tokens, (0, 1), value=blank_id)  # (B, S+1): row S emits nothing
    window_tokens = tokens[batch_index, rows]  # (B, T, R)
    px_window = log_probs.gather(-1, window_tokens[..., None]).squeeze(-1)  # (B, T, R)
    py_window = log_probs[..., blank_id]  # (B, T, R)
    lens = target_lens[:, None, None]
    px = _scatter_window(px_window, ranges, ranges < lens, max_target_len)  # (B, S, T)
    py = _scatter_window(py_window, ranges, ranges <= lens, max_target_len + 1)  # (B, S+1, T)
    return reduce_loss(-rnnt_lattice_logprob(px, py, frame_lens, target_lens), reduction)


def pruned_rnnt_loss(
    joiner: Joiner,
    am: Tensor,
    lm: Tensor,
    am_proj: Tensor,
    lm_proj: Tensor,
    targets: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    s_range: int = 5,
    blank_id: int = 0,
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
    reduction: str = "sum",
) -> PrunedLossOutput:
    """Simple loss -> occupations -> ranges -> pruned loss, in one call.

    am (B, T, V), lm (B, S+1, V): simple-joiner logits; am_proj (B, T, J), lm_proj (B, S+1, J):
    inputs of `joiner`. The ranges carry no gradient.
    """
    _validate_simple_inputs(am, lm, targets, frame_lens, target_lens, blank_id, reduction)
    px, py = simple_lattice(am, lm, targets, blank_id, lm_only_scale, am_only_scale)
    log_likelihood, px_occupation, py_occupation = lattice_logprob_with_occupation(px, py, frame_lens, target_lens)
    ranges = get_prune_ranges(px_occupation, py_occupation, frame_lens, target_lens, s_range)
    pruned = pruned_loss(joiner, am_proj, lm_proj, targets, ranges, frame_lens, target_lens, blank_id, reduction)
    return PrunedLossOutput(simple=reduce_loss(-log_likelihood, reduction), pruned=pruned, ranges=ranges)


def loss_scales(step: int, warmup_steps: int, simple_scale: float) -> tuple[float, float]:
    """(simple_weight, pruned_weight) for `step`.

    The simple loss's ranges are poor early on, so during warm-up it dominates: its weight moves
    linearly 1.0 -> simple_scale while the pruned weight moves 0.1 -> 1.0.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return simple_scale, 1.0
    progress = max(step, 0) / warmup_steps
    return 1.0 + (simple_scale - 1.0) * progress, 0.1 + 0.9 * progress
