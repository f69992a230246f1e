"""Transducer losses: exact RNN-T (rnnt), pruned RNN-T (pruned), optional third-party adapters (backends)."""
from asr.losses.backends import k2_rnnt_loss, torchaudio_rnnt_loss
from asr.losses.pruned import (
    PrunedLossOutput,
    SimpleLossOutput,
    get_prune_ranges,
    loss_scales,
    pruned_loss,
    pruned_rnnt_loss,
    simple_lattice,
    simple_loss,
)
from asr.losses.rnnt import rnnt_lattice_logprob, rnnt_loss, validate_rnnt_inputs

__all__ = [
    "PrunedLossOutput",
    "SimpleLossOutput",
    "get_prune_ranges",
    "k2_rnnt_loss",
    "loss_scales",
    "pruned_loss",
    "pruned_rnnt_loss",
    "rnnt_lattice_logprob",
    "rnnt_loss",
    "simple_lattice",
    "simple_loss",
    "torchaudio_rnnt_loss",
    "validate_rnnt_inputs",
]
