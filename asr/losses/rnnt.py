"""Exact RNN-T loss in plain torch: the lattice recursion, input validation, and the full-logits loss.

Lattice node (s, t): s target tokens emitted, at frame t. From each node a path either emits the next
target token (``px``, moving to (s+1, t)) or a blank (``py``, moving to (s, t+1)); every path ends
with a blank out of the last frame. Unlike k2, ``px`` has no extra column T: "no token after the last
frame" is implied by reading the result at (S_b, T_b - 1) plus its final blank.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Stands in for -inf throughout: logaddexp(-inf, -inf) has a NaN gradient, a finite value does not.
# Sums of a few thousand of these still fit in float32 (max ~3.4e38).
NEG_LARGE = -1e30

REDUCTIONS = ("none", "sum", "mean")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (for exact tests); everything else (bf16, fp16, fp32) runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduce per-utterance losses (B,); "mean" averages over the batch, as torchaudio and k2 do."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _is_integer(x: Tensor) -> bool:
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def validate_lengths(
    frame_lens: Tensor, target_lens: Tensor, batch: int, num_frames: int, max_target_len: int
) -> None:
    """frame_lens (B,) int in [1, T] and target_lens (B,) int in [0, S]; ValueError names the culprit."""
    for name, lens in (("frame_lens", frame_lens), ("target_lens", target_lens)):
        if lens.ndim != 1 or lens.shape[0] != batch:
            raise ValueError(f"{name} must be (B,) with B={batch}, got shape {tuple(lens.shape)}")
        if not _is_integer(lens):
            raise ValueError(f"{name} must have an integer dtype, got {lens.dtype}")
    if bool(((frame_lens < 1) | (frame_lens > num_frames)).any()):
        raise ValueError(f"frame_lens must lie in [1, {num_frames}], got {frame_lens.tolist()}")
    if bool(((target_lens < 0) | (target_lens > max_target_len)).any()):
        raise ValueError(f"target_lens must lie in [0, {max_target_len}], got {target_lens.tolist()}")


def validate_targets_and_lengths(
    targets: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    num_frames: int,
    vocab_size: int,
    blank_id: int,
) -> None:
    """Checks shared by every loss; raises ValueError naming the offending argument.

    targets (B, S) int with real tokens in [0, vocab_size) and never blank; lengths as in
    :func:`validate_lengths`.
    """
    if targets.ndim != 2:
        raise ValueError(f"targets must be (B, S), got shape {tuple(targets.shape)}")
    if not _is_integer(targets):
        raise ValueError(f"targets must have an integer dtype, got {targets.dtype}")
    batch, max_target_len = targets.shape
    validate_lengths(frame_lens, target_lens, batch, num_frames, max_target_len)
    if not 0 <= blank_id < vocab_size:
        raise ValueError(f"blank_id must lie in [0, {vocab_size}), got {blank_id}")
    # Only positions inside target_lens are real tokens; padding may hold anything.
    inside = torch.arange(max_target_len, device=targets.device) < target_lens.to(targets.device)[:, None]
    real = targets[inside]
    if bool(((real < 0) | (real >= vocab_size)).any()):
        raise ValueError(f"targets must lie in [0, {vocab_size}) within target_lens")
    if bool((real == blank_id).any()):
        raise ValueError(f"targets contain the blank id {blank_id} within target_lens")


def check_finite(name: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def validate_rnnt_inputs(
    logits: Tensor, targets: Tensor, frame_lens: Tensor, target_lens: Tensor, blank_id: int = 0
) -> None:
    """Validate full joiner logits (B, T, S+1, V) against targets (B, S) and lengths (B,)."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, S+1, V), got shape {tuple(logits.shape)}")
    if targets.ndim != 2:
        raise ValueError(f"targets must be (B, S), got shape {tuple(targets.shape)}")
    batch, num_frames, num_states, vocab_size = logits.shape
    if targets.shape[0] != batch or num_states != targets.shape[1] + 1:
        raise ValueError(
            f"logits (B, T, S+1, V)={tuple(logits.shape)} does not match targets (B, S)={tuple(targets.shape)}"
        )
    validate_targets_and_lengths(targets, frame_lens, target_lens, num_frames, vocab_size, blank_id)
    check_finite("logits", logits)


def clean_targets(targets: Tensor, target_lens: Tensor, blank_id: int) -> Tensor:
    """Replace padding past target_lens by blank so it can be used as a gather index. (B, S)"""
    inside = torch.arange(targets.shape[1], device=targets.device) < target_lens[:, None]
    return torch.where(inside, targets, torch.full_like(targets, blank_id)).long()


def _skew(x: Tensor) -> Tensor:
    """(B, R, T) -> (B, R, T+R-1) with out[b, r, r+t] = x[b, r, t] and NEG_LARGE elsewhere.

    Column d of the result holds the anti-diagonal s + t = d, so the recursion reads one column per
    step. Padding each row with R columns and re-reading the flat buffer with row length T+R-1
    shifts row r right by r without building an index tensor.
    """
    batch, rows, num_frames = x.shape
    width = num_frames + rows
    padded = F.pad(x, (0, rows), value=NEG_LARGE)  # (B, R, T+R)
    flat = padded.reshape(batch, rows * width)[:, : rows * (width - 1)]
    return flat.reshape(batch, rows, width - 1)


def _unskew(x: Tensor, num_frames: int) -> Tensor:
    """Inverse of :func:`_skew`: (B, R, T+R-1) diagonal columns -> (B, R, T) with out[b, r, t] = x[b, r, r+t]."""
    batch, rows, width = x.shape
    flat = F.pad(x.reshape(batch, rows * width), (0, rows))
    return flat.reshape(batch, rows, width + 1)[:, :, :num_frames]


class _LatticeLogProb(torch.autograd.Function):
    """Forward (alpha) and backward (beta) recursions over anti-diagonals, with the closed-form gradient.

    Autograd through the recursion would record a few ops per diagonal and replay them backwards;
    here the backward pass is one beta recursion plus two exps: d ll / d px[s, t] is the posterior
    occupation exp(alpha[s, t] + px[s, t] + beta[s+1, t] - ll), and likewise for py with beta[s, t+1].
    px and py arrive masked and padded to (B, S+1, T) (row S of px is NEG_LARGE).
    """

    @staticmethod
    def forward(ctx, px: Tensor, py: Tensor, frame_lens: Tensor, target_lens: Tensor) -> Tensor:
        batch, num_states, num_frames = px.shape
        px_diag, py_diag = _skew(px).unbind(dim=2), _skew(py).unbind(dim=2)
        num_diags = len(px_diag)
        first_row = px.new_full((batch, 1), NEG_LARGE)

        alpha = px.new_full((batch, num_states), NEG_LARGE)  # on diagonal d, indexed by s
        alpha[:, 0] = 0.0
        alphas = [alpha]
        for d in range(1, num_diags):
            from_token = torch.cat([first_row, (alpha + px_diag[d - 1])[:, :-1]], dim=1)
            alpha = torch.logaddexp(from_token, alpha + py_diag[d - 1]).clamp_(min=NEG_LARGE)
            alphas.append(alpha)
        alpha_grid = _unskew(torch.stack(alphas, dim=2), num_frames)  # (B, S+1, T)
        batch_idx = torch.arange(batch, device=px.device)
        final_blank = py[batch_idx, target_lens, frame_lens - 1]
        log_likelihood = alpha_grid[batch_idx, target_lens, frame_lens - 1] + final_blank

        # beta[s, t]: log-prob of finishing from node (s, t), its final blank included. `source` holds
        # final_blank at each utterance's end node (S_b, T_b-1) and NEG_LARGE elsewhere. Every arc
        # out of the end node leaves the utterance (about NEG_LARGE), so a maximum with `source` sets
        # the end node exactly and clamps the rest, with no per-diagonal branch (a GPU sync).
        source = px.new_full((batch, num_states, num_frames), NEG_LARGE)
        source[batch_idx, target_lens, frame_lens - 1] = final_blank
        source_diag = _skew(source).unbind(dim=2)
        last_row = px.new_full((batch, 1), NEG_LARGE)
        beta = px.new_full((batch, num_states), NEG_LARGE)  # beyond the last diagonal
        betas = []
        for d in range(num_diags - 1, -1, -1):
            to_token = torch.cat([beta[:, 1:], last_row], dim=1) + px_diag[d]  # (s, t) -> (s+1, t)
            beta = torch.maximum(torch.logaddexp(to_token, beta + py_diag[d]), source_diag[d])
            betas.append(beta)
        beta_grid = _unskew(torch.stack(betas[::-1], dim=2), num_frames)
        ctx.save_for_backward(px, py, alpha_grid, beta_grid, log_likelihood, frame_lens, target_lens)
        return log_likelihood

    @staticmethod
    def backward(ctx, grad: Tensor):
        px, py, alpha, beta, log_likelihood, frame_lens, target_lens = ctx.saved_tensors
        batch, num_states, num_frames = px.shape
        ll = log_likelihood[:, None, None]
        beta_next_state = F.pad(beta[:, 1:], (0, 0, 0, 1), value=NEG_LARGE)  # beta[s+1, t]
        beta_next_frame = F.pad(beta[:, :, 1:], (0, 1), value=NEG_LARGE)  # beta[s, t+1]
        # The final blank out of (S_b, T_b-1) ends the path: what follows it has log-prob 0.
        batch_idx = torch.arange(batch, device=px.device)
        beta_next_frame[batch_idx, target_lens, frame_lens - 1] = 0.0
        scale = grad[:, None, None]
        grad_px = (alpha + px + beta_next_state - ll).exp() * scale
        grad_py = (alpha + py + beta_next_frame - ll).exp() * scale
        return grad_px, grad_py, None, None


def rnnt_lattice_logprob(px: Tensor, py: Tensor, frame_lens: Tensor, target_lens: Tensor) -> Tensor:
    """Total log-probability of the RNN-T lattice per utterance, (B,). Differentiable.

    Args:
      px: (B, S, T) log-prob of emitting targets[:, s] at node (s, t).
      py: (B, S+1, T) log-prob of blank at node (s, t).
      frame_lens: (B,) int, T_b in [1, T]. target_lens: (B,) int, S_b in [0, S].
    Returns:
      (B,) alpha(S_b, T_b-1) + py(S_b, T_b-1), in float32 (float64 if px is float64).
    """
    batch, max_target_len, num_frames = px.shape
    if py.shape != (batch, max_target_len + 1, num_frames):
        expected = (batch, max_target_len + 1, num_frames)
        raise ValueError(f"py must be (B, S+1, T)={expected}, got {tuple(py.shape)}")
    validate_lengths(frame_lens, target_lens, batch, num_frames, max_target_len)
    dtype = compute_dtype(px.dtype)
    device = px.device
    frame_lens, target_lens = frame_lens.long().to(device), target_lens.long().to(device)
    # Mask arcs outside each utterance so padding can neither leak into alpha nor carry gradients.
    frame_ok = torch.arange(num_frames, device=device) < frame_lens[:, None, None]  # (B, 1, T)
    states = torch.arange(max_target_len + 1, device=device)[None, :, None]  # (1, S+1, 1)
    px_ok = (states[:, :max_target_len] < target_lens[:, None, None]) & frame_ok
    py_ok = (states <= target_lens[:, None, None]) & frame_ok
    px = torch.where(px_ok, px.to(dtype), NEG_LARGE)
    py = torch.where(py_ok, py.to(dtype), NEG_LARGE)
    # Row S has no token to emit; the extra row gives px the same (S+1) rows as py.
    px = torch.cat([px, px.new_full((batch, 1, num_frames), NEG_LARGE)], dim=1)  # (B, S+1, T)
    return _LatticeLogProb.apply(px, py, frame_lens, target_lens)


def rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    blank_id: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """Exact RNN-T loss (negative log-likelihood).

    Args:
      logits: (B, T, S+1, V) unnormalised joiner output. targets: (B, S) int, padded past target_lens.
      frame_lens: (B,) int. target_lens: (B,) int. reduction: "none" -> (B,), "sum" or "mean" -> ().
    """
    validate_rnnt_inputs(logits, targets, frame_lens, target_lens, blank_id)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    batch, num_frames, _, _ = logits.shape
    max_target_len = targets.shape[1]
    log_probs = logits.to(compute_dtype(logits.dtype)).log_softmax(dim=-1)  # (B, T, S+1, V)
    py = log_probs[..., blank_id].transpose(1, 2)  # (B, S+1, T)
    tokens = clean_targets(targets, target_lens, blank_id)
    index = tokens[:, None, :, None].expand(batch, num_frames, max_target_len, 1)
    px = log_probs[:, :, :max_target_len].gather(-1, index).squeeze(-1).transpose(1, 2)  # (B, S, T)
    loss = -rnnt_lattice_logprob(px, py, frame_lens.to(logits.device), target_lens.to(logits.device))
    return reduce_loss(loss, reduction)
