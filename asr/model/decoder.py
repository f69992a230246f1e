"""Stateless prediction network: embedding of the last `context_size` tokens and a small conv."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import DecoderConfig


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, blank_id: int, config: DecoderConfig) -> None:
        super().__init__()
        self.blank_id = blank_id
        self.context_size = config.context_size
        # Blank embeds to zero: an empty history looks the same whatever its length.
        self.embedding = nn.Embedding(vocab_size, config.d_model, padding_idx=blank_id)
        self.conv = (
            nn.Conv1d(config.d_model, config.d_model, config.context_size, groups=config.d_model, bias=False)
            if config.context_size > 1
            else None
        )

    @property
    def output_dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, N) with N >= context_size -> (B, N - context_size + 1, D).

        Each output sees the `context_size` tokens ending at its position.
        """
        h = self.embedding(tokens)  # (B, N, D)
        if self.conv is not None:
            # The depthwise conv written out: a greedy search calls this once per emitted token on
            # a (N, D, 2) input, where a conv1d call costs 10x these two ops on CPU.
            windows = h.unfold(1, self.context_size, 1)  # (B, N - K + 1, D, K)
            h = (windows * self.conv.weight[:, 0]).sum(-1)
        return F.relu(h)

    def training_input(self, targets: Tensor) -> Tensor:
        """targets (B, S) -> (B, S + context_size): blank history prepended, so the decoder
        output has S + 1 rows, one per lattice row s (having emitted s tokens)."""
        pad = targets.new_full((targets.shape[0], self.context_size), self.blank_id)
        return torch.cat([pad, targets], dim=1)
