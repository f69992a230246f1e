"""Joint network: project encoder and decoder outputs, add, tanh, output layer."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Joiner(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_proj: Tensor, decoder_proj: Tensor) -> Tensor:
        """Both inputs already projected, (..., J) broadcastable -> logits (..., V).

        Projections are done once by the caller (per frame / per hypothesis) rather than for
        every (frame, token) pair: that is what keeps the joint step cheap.
        """
        return self.output(torch.tanh(encoder_proj + decoder_proj))
