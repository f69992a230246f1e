"""4x convolutional front-end that streams exactly.

Two Conv2d layers (kernel 3, stride 2, no time padding) give each output frame a receptive field
of 7 input frames with stride 4. The input is prefixed by 3 cached frames (zeros at the start of
a stream, in the offline pass too), so T input frames give exactly T // 4 output frames and a
chunk of 4C frames gives C outputs: streaming and offline see identical windows.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from asr.model.cache import take_window

CONTEXT_FRAMES = 3  # receptive field (7) minus stride (4)


class Conv2dSubsampling(nn.Module):
    def __init__(self, num_features: int, d_model: int, channels: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq_out = ((num_features - 3) // 2 + 1 - 3) // 2 + 1
        self.out = nn.Linear(channels * freq_out, d_model)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch_size, CONTEXT_FRAMES, self.num_features, device=device)

    def forward(self, x: Tensor, x_lens: Tensor, cache: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """
        x: (B, T, F) features, x_lens: (B,), cache: (B, 3, F).
        Returns y (B, T // 4, D), y_lens = x_lens // 4, and the new cache (B, 3, F): the frames
        after the last consumed stride, per stream.
        """
        x = torch.cat([cache.to(x.dtype), x], dim=1)  # (B, 3 + T, F)
        y_lens = torch.div(x_lens, 4, rounding_mode="floor")
        new_cache = take_window(x, 4 * y_lens, CONTEXT_FRAMES, dim=1)
        batch, frames, _ = x.shape
        num_out = (frames - CONTEXT_FRAMES) // 4
        if num_out == 0:
            return x.new_zeros(batch, 0, self.out.out_features), y_lens, new_cache
        h = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        h = h.transpose(1, 2).flatten(2)  # (B, T', C * F')
        return self.out(h), y_lens, new_cache
