"""Conformer transducer: encoder, stateless decoder, joiner, pruned RNN-T (+ optional CTC) loss."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import ModelConfig
from asr.losses import loss_scales, pruned_rnnt_loss
from asr.losses.rnnt import validate_targets_and_lengths
from asr.model.conformer import SUBSAMPLING_FACTOR, ConformerEncoder, EncoderOutput
from asr.model.decoder import Decoder
from asr.model.joiner import Joiner


@dataclass
class TransducerLoss:
    loss: Tensor  # scalar, the weighted sum that is back-propagated (summed over the batch)
    simple: Tensor  # scalar, summed over the batch
    pruned: Tensor
    ctc: Tensor | None
    num_frames: int  # encoder frames in the batch (before merging), for per-frame normalisation
    balance: Tensor | None = None  # MoE load-balancing loss (a mean, already in `loss` with its scale)
    by_granularity: dict[str, float] = field(default_factory=dict)  # pruned loss sum per granularity
    tokens_kept: dict[str, float] = field(default_factory=dict)  # encoder tokens / frames per granularity


class Transducer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConformerEncoder(config.encoder)
        self.decoder = Decoder(config.vocab_size, config.blank_id, config.decoder)
        self.joiner = Joiner(
            self.encoder.output_dim, self.decoder.output_dim, config.joiner.d_joiner, config.vocab_size
        )
        # The trivial joiner of the simple loss: am + lm logits, which also yields pruning bounds.
        self.simple_am_proj = nn.Linear(self.encoder.output_dim, config.vocab_size)
        self.simple_lm_proj = nn.Linear(self.decoder.output_dim, config.vocab_size)
        merge = config.encoder.merge
        # a CTC head only where some trained granularity uses it (an unused head would upset DDP)
        ctc_used = any(self.trains_ctc(n) for n, w in zip(merge.granularities, merge.loss_weights) if w > 0)
        self.ctc_output = (
            nn.Linear(self.encoder.output_dim, config.vocab_size) if config.loss.ctc_scale > 0 and ctc_used else None
        )

    def trains_ctc(self, granularity: str) -> bool:
        """Whether the CTC loss (when there is one) trains at this granularity (loss.ctc_on_merged)."""
        return self.config.loss.ctc_on_merged or not self.config.encoder.merge.merges(granularity)

    @property
    def blank_id(self) -> int:
        return self.config.blank_id

    def forward(
        self, features: Tensor, feature_lens: Tensor, targets: Tensor, target_lens: Tensor, step: int = 0
    ) -> TransducerLoss:
        """Training loss. features (B, T, F) float, feature_lens (B,), targets (B, S) int64 token
        ids padded past target_lens (B,). Dynamic chunk training picks this batch's chunking."""
        self.validate_batch(features, feature_lens, targets, target_lens)
        chunk_size, left_context = self.encoder.sample_chunking() if self.training else (-1, -1)
        merge = self.config.encoder.merge
        if not merge.layers:
            enc = self.encoder(features, feature_lens, chunk_size=chunk_size, left_context=left_context)
            return self.losses(enc, targets, target_lens, step)
        # Matryoshka: every granularity with a weight, sharing the blocks before the first merge.
        weights = {n: w for n, w in zip(merge.granularities, merge.loss_weights) if w > 0}
        outputs = self.encoder.forward_granularities(features, feature_lens, list(weights), chunk_size, left_context)
        parts = {name: self.losses(out, targets, target_lens, step, self.trains_ctc(name))
                 for name, out in outputs.items()}

        def mix(get):
            """Weighted mean over the granularities that have this term (CTC may skip merged ones)."""
            present = {n: get(p) for n, p in parts.items() if get(p) is not None}
            if not present:
                return None
            return sum(weights[n] * v for n, v in present.items()) / sum(weights[n] for n in present)

        first = next(iter(parts.values()))
        return TransducerLoss(
            mix(lambda p: p.loss), mix(lambda p: p.simple), mix(lambda p: p.pruned), mix(lambda p: p.ctc),
            first.num_frames, mix(lambda p: p.balance),
            {n: float(p.pruned.detach()) for n, p in parts.items()},
            {n: float(out.out_lens.sum()) / max(1, first.num_frames) for n, out in outputs.items()},
        )

    def losses(
        self, enc: EncoderOutput, targets: Tensor, target_lens: Tensor, step: int, ctc: bool = True
    ) -> TransducerLoss:
        cfg = self.config.loss
        blank = self.blank_id
        dec = self.decoder(self.decoder.training_input(targets))  # (B, S + 1, Dd)
        # Merging may leave fewer tokens than the pruned lattice's width assumes: widen it so every
        # utterance's tokens fit ((s_range - 1) tokens per encoder token at most).
        need = int(torch.ceil(target_lens.float() / enc.out_lens.clamp(min=1).float()).max()) + 1
        s_range = max(cfg.s_range, need)
        out = pruned_rnnt_loss(
            self.joiner,
            am=self.simple_am_proj(enc.out),  # (B, T, V)
            lm=self.simple_lm_proj(dec),  # (B, S + 1, V)
            am_proj=self.joiner.encoder_proj(enc.out),  # (B, T, J)
            lm_proj=self.joiner.decoder_proj(dec),  # (B, S + 1, J)
            targets=targets, frame_lens=enc.out_lens, target_lens=target_lens, s_range=s_range,
            blank_id=blank, lm_only_scale=cfg.lm_only_scale, am_only_scale=cfg.am_only_scale, reduction="sum",
        )
        simple, pruned = out.simple, out.pruned
        simple_weight, pruned_weight = loss_scales(step, cfg.warmup_steps, cfg.simple_scale)
        total = simple_weight * simple + pruned_weight * pruned
        ctc_loss = None
        if self.ctc_output is not None and ctc:
            log_probs = self.ctc_output(enc.out).log_softmax(-1).transpose(0, 1)  # (T, B, V)
            ctc_loss = F.ctc_loss(log_probs, targets, enc.out_lens, target_lens, blank=blank, reduction="sum",
                                  zero_infinity=True)
            total = total + cfg.ctc_scale * ctc_loss
        frames = int(enc.frame_lens.sum())
        balance = enc.balance_loss
        if balance is not None:
            # per frame like the other terms, so its scale does not depend on the batch size
            total = total + self.config.encoder.moe.balance_scale * balance * frames
        return TransducerLoss(total, simple, pruned, ctc_loss, frames, balance)

    def validate_batch(self, features: Tensor, feature_lens: Tensor, targets: Tensor, target_lens: Tensor) -> None:
        """Clear errors for malformed batches before any compute, not an index error deep inside."""
        validate_features(features, feature_lens, self.config.encoder.num_features)
        if targets.dim() == 2 and target_lens.dim() == 1 and target_lens.shape[0] == targets.shape[0]:
            empty = (target_lens <= 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(
                    f"zero-length targets for utterance(s) {empty}: a transducer needs at least one token "
                    "per training utterance (filter out empty transcripts)"
                )
        validate_targets_and_lengths(
            targets, feature_lens // SUBSAMPLING_FACTOR, target_lens, features.shape[1] // SUBSAMPLING_FACTOR,
            self.config.vocab_size, self.blank_id,
        )


def validate_features(features: Tensor, feature_lens: Tensor, num_features: int) -> None:
    if not torch.is_tensor(features) or not features.is_floating_point():
        raise ValueError(f"features must be a floating-point tensor, got {getattr(features, 'dtype', type(features))}")
    if features.dim() != 3 or features.shape[-1] != num_features:
        raise ValueError(f"features must be (B, T, {num_features}), got {tuple(features.shape)}")
    if feature_lens.dim() != 1 or feature_lens.shape[0] != features.shape[0]:
        raise ValueError(f"feature_lens must be ({features.shape[0]},), got {tuple(feature_lens.shape)}")
    if feature_lens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"feature_lens must be an integer tensor, got {feature_lens.dtype}")
    if int(feature_lens.max()) > features.shape[1]:
        raise ValueError(f"feature_lens exceed the number of frames {features.shape[1]}")
    short = (feature_lens < SUBSAMPLING_FACTOR).nonzero().flatten().tolist()
    if short:
        raise ValueError(
            f"utterance(s) {short} have fewer than {SUBSAMPLING_FACTOR} feature frames "
            f"({SUBSAMPLING_FACTOR * 10} ms): too short to give one encoder frame"
        )
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or infinite values")
