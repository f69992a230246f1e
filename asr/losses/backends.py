"""Optional adapters to third-party RNN-T losses, same signature as :func:`asr.losses.rnnt.rnnt_loss`.

Used to cross-check our loss where torchaudio or k2 is installed; neither is a dependency, so both
import lazily.
"""
from __future__ import annotations

import torch
from torch import Tensor

from asr.losses.rnnt import REDUCTIONS, clean_targets, validate_rnnt_inputs


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def torchaudio_rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    blank_id: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """torchaudio.functional.rnnt_loss on logits (B, T, S+1, V); it wants int32 targets and lengths."""
    try:
        from torchaudio.functional import rnnt_loss as torchaudio_loss
    except ImportError as error:
        raise ImportError("torchaudio_rnnt_loss needs torchaudio, which is not installed") from error
    validate_rnnt_inputs(logits, targets, frame_lens, target_lens, blank_id)
    _check_reduction(reduction)
    return torchaudio_loss(
        logits,
        clean_targets(targets, target_lens, blank_id).int(),
        frame_lens.to(logits.device).int(),
        target_lens.to(logits.device).int(),
        blank=blank_id,
        reduction=reduction,
    )


def k2_rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    frame_lens: Tensor,
    target_lens: Tensor,
    blank_id: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """k2.rnnt_loss on logits (B, T, S+1, V); per-utterance lengths go in a boundary [0, 0, S_b, T_b]."""
    try:
        import k2
    except ImportError as error:
        raise ImportError("k2_rnnt_loss needs k2, which is not installed") from error
    validate_rnnt_inputs(logits, targets, frame_lens, target_lens, blank_id)
    _check_reduction(reduction)
    batch = logits.shape[0]
    boundary = torch.zeros(batch, 4, dtype=torch.int64, device=logits.device)
    boundary[:, 2] = target_lens.to(logits.device)
    boundary[:, 3] = frame_lens.to(logits.device)
    return k2.rnnt_loss(
        logits=logits,
        symbols=clean_targets(targets, target_lens, blank_id),
        termination_symbol=blank_id,
        boundary=boundary,
        reduction=reduction,
    )
