"""Streaming Conformer encoder: one code path for offline and chunk-by-chunk inference.

Every block takes an optional cache and returns the new one. Offline is the no-state case with a
chunk mask; streaming feeds one chunk at a time with a state. Chunk-by-chunk output equals one
full pass under the same chunk mask (tests/model/test_streaming.py proves it).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import EncoderConfig
from asr.model.attention import RotaryEmbedding, SelfAttention
from asr.model.cache import append_and_trim
from asr.model.state import EncoderState, LayerState
from asr.model.subsampling import Conv2dSubsampling

SUBSAMPLING_FACTOR = 4


@dataclass
class EncoderOutput:
    out: Tensor  # (B, T', D)
    out_lens: Tensor  # (B,) int64
    state: EncoderState | None  # new state when a state was given


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise conv + GLU, causal depthwise conv (cache = its last K-1 inputs), pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        # Pointwise convs as Linear layers: same maths, and CPU GEMMs beat kernel-1 convolutions.
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        # LayerNorm over channels rather than BatchNorm: per-frame, so streaming matches training.
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, x_lens: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D), cache: (B, D, K-1) -> y (B, T, D), new cache (B, D, K-1)."""
        h = F.glu(self.pointwise_in(self.norm(x)), dim=-1).transpose(1, 2)  # (B, D, T)
        new_cache = append_and_trim(cache, h, x_lens, dim=2)
        h = self.depthwise(torch.cat([cache.to(h.dtype), h], dim=2))  # (B, D, T)
        h = F.silu(self.depthwise_norm(h.transpose(1, 2)))  # (B, T, D)
        return self.dropout(self.pointwise_out(h)), new_cache


class ConformerBlock(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ff1 = FeedForward(d, config.ff_dim, config.dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = SelfAttention(d, config.num_heads, config.dropout)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.conv = ConvModule(d, config.conv_kernel, config.dropout)
        self.ff2 = FeedForward(d, config.ff_dim, config.dropout)
        self.final_norm = nn.LayerNorm(d)

    def forward(
        self, x: Tensor, x_lens: Tensor, rotary: tuple[Tensor, Tensor], mask: Tensor, cache: LayerState
    ) -> tuple[Tensor, LayerState]:
        """x: (B, T, D); mask: (B, T, L + T) before the cache's validity is applied."""
        x = x + 0.5 * self.ff1(x)
        valid_mask = mask & torch.cat([cache.valid, mask.new_ones(mask.shape[0], x.shape[1])], dim=1)[:, None]
        valid_mask = valid_mask | ~valid_mask.any(dim=-1, keepdim=True)  # padded queries: finite junk
        attn, key, value = self.attn(self.attn_norm(x), rotary, valid_mask, cache.key, cache.value)
        x = x + self.attn_dropout(attn)
        conv, conv_cache = self.conv(x, x_lens, cache.conv)
        x = x + conv
        x = x + 0.5 * self.ff2(x)
        frame_valid = torch.arange(x.shape[1], device=x.device)[None] < x_lens[:, None]  # (B, T)
        new_cache = LayerState(
            key=append_and_trim(cache.key, key, x_lens, dim=2),
            value=append_and_trim(cache.value, value, x_lens, dim=2),
            valid=append_and_trim(cache.valid, frame_valid, x_lens, dim=1),
            conv=conv_cache,
        )
        return self.final_norm(x), new_cache


def chunk_attention_mask(
    num_frames: Tensor, x_lens: Tensor, num_new: int, cache_size: int, chunk_size: int, left_context: int
) -> Tensor:
    """Which keys each new frame may see: its own chunk, earlier chunks back to `left_context`
    frames before its chunk, never a padded frame.

    num_frames: (B,) absolute position of the first new frame; the cache holds the `cache_size`
    frames before it. chunk_size <= 0 means full context; left_context < 0 means unlimited.
    Returns (B, T, L + T) bool (cache validity is applied by each block).
    """
    device = num_frames.device
    query_pos = num_frames[:, None] + torch.arange(num_new, device=device)  # (B, T)
    cache_pos = num_frames[:, None] - cache_size + torch.arange(cache_size, device=device)  # (B, L)
    key_pos = torch.cat([cache_pos, query_pos], dim=1)  # (B, L + T)
    key_real = torch.cat(
        [torch.ones_like(cache_pos, dtype=torch.bool), torch.arange(num_new, device=device)[None] < x_lens[:, None]],
        dim=1,
    )
    mask = key_real[:, None, :].expand(-1, num_new, -1)
    if chunk_size > 0:
        query_chunk_start = torch.div(query_pos, chunk_size, rounding_mode="floor") * chunk_size  # (B, T)
        mask = mask & (key_pos[:, None, :] < (query_chunk_start + chunk_size)[:, :, None])
        if left_context >= 0:
            mask = mask & (key_pos[:, None, :] >= (query_chunk_start - left_context)[:, :, None])
    return mask


class FeatureNorm(nn.Module):
    """Global per-bin mean/variance normalisation of the input features (CMVN). The statistics are
    buffers, set once from training data (`set_stats`) and saved in every checkpoint; per frame, so
    streaming and offline normalise identically. Identity until set."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("inv_std", torch.ones(num_features))

    @torch.no_grad()
    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(mean)
        self.inv_std.copy_(1.0 / std.clamp(min=1e-3))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.inv_std


class ConformerEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.input_norm = FeatureNorm(config.num_features)
        self.subsampling = Conv2dSubsampling(config.num_features, config.d_model, config.subsampling_channels)
        self.rotary = RotaryEmbedding(config.d_model // config.num_heads, config.rotary_base)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(ConformerBlock(config) for _ in range(config.num_layers))

    @property
    def output_dim(self) -> int:
        return self.config.d_model

    def init_state(self, batch_size: int, left_context: int, device: torch.device | str = "cpu") -> EncoderState:
        """A fresh streaming state: empty attention caches of `left_context` frames."""
        if left_context < 0:
            raise ValueError(f"streaming needs a bounded left_context (frames), got {left_context}")
        c = self.config
        heads, head_dim = c.num_heads, c.d_model // c.num_heads
        layers = [
            LayerState(
                key=torch.zeros(batch_size, heads, left_context, head_dim, device=device),
                value=torch.zeros(batch_size, heads, left_context, head_dim, device=device),
                valid=torch.zeros(batch_size, left_context, dtype=torch.bool, device=device),
                conv=torch.zeros(batch_size, c.d_model, c.conv_kernel - 1, device=device),
            )
            for _ in range(c.num_layers)
        ]
        return EncoderState(
            subsampling=self.subsampling.init_cache(batch_size, device),
            layers=layers,
            num_frames=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def sample_chunking(self) -> tuple[int, int]:
        """Dynamic chunk training: a random (chunk_size, left_context) for one batch, in frames."""
        c = self.config
        if random.random() < c.full_context_prob:
            return -1, -1
        chunk = random.choice(c.train_chunk_sizes)
        left_chunks = random.choice(c.train_left_chunks)
        return chunk, (-1 if left_chunks < 0 else left_chunks * chunk)

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        state: EncoderState | None = None,
        chunk_size: int = -1,
        left_context: int = -1,
    ) -> EncoderOutput:
        """
        x: (B, T, F) features, x_lens: (B,). Without `state`: the offline pass under a chunk mask
        (chunk_size <= 0: full context). With `state`: the next piece of each stream; its frames
        are chunked by absolute position, left context is the state's cache size, and T must be
        a multiple of 4 except for a stream's last piece.
        """
        if x.dim() != 3 or x.shape[-1] != self.config.num_features:
            raise ValueError(f"encoder input must be (B, T, {self.config.num_features}), got {tuple(x.shape)}")
        stateless = state is None
        if stateless:
            state = self.init_state(x.shape[0], 0, x.device)
        else:
            left_context = state.layers[0].key.shape[2] if state.layers else 0
        h, h_lens, sub_cache = self.subsampling(self.input_norm(x), x_lens, state.subsampling)
        h = self.dropout(h)
        num_new = h.shape[1]
        positions = state.num_frames[:, None] + torch.arange(num_new, device=h.device)  # (B, T')
        rotary = self.rotary(positions, h.dtype)
        cache_size = state.layers[0].key.shape[2] if state.layers else 0
        mask = chunk_attention_mask(state.num_frames, h_lens, num_new, cache_size, chunk_size, left_context)
        new_layers = state.layers
        if num_new > 0:  # a tail of < 4 feature frames only refills the subsampling cache
            new_layers = []
            for layer, cache in zip(self.layers, state.layers):
                h, new_cache = layer(h, h_lens, rotary, mask, cache)
                new_layers.append(new_cache)
        if stateless:
            return EncoderOutput(h, h_lens, None)
        new_state = EncoderState(subsampling=sub_cache, layers=new_layers, num_frames=state.num_frames + h_lens)
        return EncoderOutput(h, h_lens, new_state)
