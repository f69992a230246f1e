"""Streaming Conformer encoder: one code path for offline and chunk-by-chunk inference.

Every block takes an optional cache and returns the new one. Offline is the no-state case with a
chunk mask; streaming feeds one chunk at a time with a state. Chunk-by-chunk output equals one
full pass under the same chunk mask (tests/model/test_streaming.py proves it).
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.config import EncoderConfig, MergeConfig
from asr.model.attention import RotaryEmbedding, SelfAttention
from asr.model.cache import append_and_trim, right_aligned_slots, scatter_right
from asr.model.dropout import Dropout
from asr.model.merge import MAX_RATIO, adjacent_similarity, merge_tokens, mergeable_pairs, ratio_budget, select_pairs
from asr.model.moe import MoEFeedForward
from asr.model.state import EncoderState, LayerState
from asr.model.subsampling import Conv2dSubsampling

SUBSAMPLING_FACTOR = 4


@dataclass
class EncoderOutput:
    out: Tensor  # (B, T', D) one row per token (a merged token covers several frames)
    out_lens: Tensor  # (B,) int64 real tokens
    state: EncoderState | None  # new state when a state was given
    start: Tensor  # (B, T') int64 absolute first encoder frame of each token
    size: Tensor  # (B, T') int64 encoder frames each token covers
    balance_loss: Tensor | None = None  # mean MoE load-balancing loss, when the encoder has MoE layers

    @property
    def spans(self) -> Tensor:
        """(B, T', 2) [start, end) encoder frames of each token: what a search records for timestamps."""
        return torch.stack([self.start, self.start + self.size], dim=-1)

    @property
    def frame_lens(self) -> Tensor:
        """(B,) encoder frames the output covers (equals out_lens without merging)."""
        real = torch.arange(self.size.shape[1], device=self.size.device)[None] < self.out_lens[:, None]
        return self.size.masked_fill(~real, 0).sum(1)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, hidden),
            nn.SiLU(),
            Dropout(dropout),
            nn.Linear(hidden, d_model),
            Dropout(dropout),
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
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, x_lens: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D), cache: (B, D, K-1) -> y (B, T, D), new cache (B, D, K-1)."""
        h = F.glu(self.pointwise_in(self.norm(x)), dim=-1).transpose(1, 2)  # (B, D, T)
        new_cache = append_and_trim(cache, h, x_lens, dim=2)
        h = self.depthwise(torch.cat([cache.to(h.dtype), h], dim=2))  # (B, D, T)
        h = F.silu(self.depthwise_norm(h.transpose(1, 2)))  # (B, T, D)
        return self.dropout(self.pointwise_out(h)), new_cache


@dataclass
class Tokens:
    """Which encoder frames each token of a (possibly merged) sequence covers."""

    lens: Tensor  # (B,) real tokens per row
    start: Tensor  # (B, T) int64 absolute first encoder frame of each token
    size: Tensor  # (B, T) int64 encoder frames it covers

    @staticmethod
    def frames(first: Tensor, lens: Tensor, num: int) -> "Tokens":
        """Unmerged tokens: one per encoder frame, starting at absolute frame `first` (B,)."""
        start = first[:, None] + torch.arange(num, device=first.device)
        return Tokens(lens, start, torch.ones_like(start))

    def positions(self) -> Tensor:
        """(B, T) float64 rotary position of each token: the middle of its span."""
        return self.start.to(torch.float64) + (self.size.to(torch.float64) - 1) / 2

    def real(self) -> Tensor:
        return torch.arange(self.start.shape[1], device=self.start.device)[None] < self.lens[:, None]


@dataclass
class PassContext:
    """What every block of one encoder call needs besides its input."""

    chunk_size: int  # encoder frames per chunk; <= 0: full context
    left_context: int  # encoder frames of left context; < 0: unlimited
    window_start: Tensor | None  # (B,) streaming: keep cached tokens starting here or later; None: no cache
    merge_values: Tensor | None  # (B,) threshold or ratio per row; None: no merging
    merge_mode: str = "threshold"
    proportional: bool = False  # add log(token size) to attention logits


def attention_mask(query_start: Tensor, query_real: Tensor, key_start: Tensor, key_real: Tensor,
                   chunk_size: int, left_context: int) -> Tensor:
    """(B, T, K) bool: which keys each query may see: a real key of its own chunk or of earlier
    chunks back to `left_context` frames before its chunk. Tokens are placed by their first frame;
    a merged token never spans two chunks, so this is the frame-level chunk mask."""
    mask = key_real[:, None, :].expand(-1, query_start.shape[1], -1)
    if chunk_size > 0:
        chunk_start = torch.div(query_start, chunk_size, rounding_mode="floor") * chunk_size  # (B, T)
        mask = mask & (key_start[:, None, :] < (chunk_start + chunk_size)[:, :, None])
        if left_context >= 0:
            mask = mask & (key_start[:, None, :] >= (chunk_start - left_context)[:, :, None])
    return mask & query_real[:, :, None] | ~query_real[:, :, None]  # padded queries: finite junk


def chunk_attention_mask(
    num_frames: Tensor, x_lens: Tensor, num_new: int, cache_size: int, chunk_size: int, left_context: int
) -> Tensor:
    """The frame-level mask of `num_new` unmerged frames after a full cache of `cache_size` frames:
    (B, T, L + T) bool. num_frames: (B,) absolute position of the first new frame."""
    device = num_frames.device
    query = Tokens.frames(num_frames, x_lens, num_new)
    cache_start = num_frames[:, None] - cache_size + torch.arange(cache_size, device=device)
    key_start = torch.cat([cache_start, query.start], dim=1)
    key_real = torch.cat([torch.ones_like(cache_start, dtype=torch.bool), query.real()], dim=1)
    return attention_mask(query.start, torch.ones_like(query.start, dtype=torch.bool), key_start, key_real,
                          chunk_size, left_context)


@dataclass
class KeyLayout:
    """Which keys an attention call sees and where each lands in the new cache. It depends only on
    the tokens and on the cache's bookkeeping, so blocks that see the same tokens with caches of
    the same layout (every block up to the first merge) share one: built once per encoder call."""

    first: int  # leading cache slots no stream uses; attention skips them (merged caches hold fewer)
    start: Tensor  # (B, L' + T) first frame of every key: the used cache slots, then the new tokens
    size: Tensor  # (B, L' + T) frames each key covers
    real: Tensor  # (B, L' + T)
    mask: Tensor  # (B, T, L' + T)
    bias: Tensor | None  # (B, L' + T) log(size) for proportional attention
    slots: Tensor | None  # (B, L' + T) slot of each key in the new cache (streaming only)

    @staticmethod
    def build(cache: LayerState, tokens: Tokens, ctx: PassContext, dtype: torch.dtype) -> "KeyLayout":
        width = cache.valid.shape[1]
        first = width - int(cache.valid.sum(1).max()) if width else 0
        real = tokens.real()
        start = torch.cat([cache.start[:, first:], tokens.start], dim=1)
        size = torch.cat([cache.size[:, first:], tokens.size], dim=1)
        key_real = torch.cat([cache.valid[:, first:], real], dim=1)
        mask = attention_mask(tokens.start, real, start, key_real, ctx.chunk_size, ctx.left_context)
        # padding slots have size 0: clamp, so no -inf (NaN * 0 = NaN) leaks into real outputs
        bias = size.clamp(min=1).to(dtype).log() if ctx.proportional else None
        slots = None
        if ctx.window_start is not None:  # streaming: keep the tokens of the last L frames
            slots = right_aligned_slots(key_real & (start >= ctx.window_start[:, None]), width)
        return KeyLayout(first, start, size, key_real, mask, bias, slots)


class ConformerBlock(nn.Module):
    def __init__(self, config: EncoderConfig, merges: bool = False, moe_ff1: bool = False,
                 moe_ff2: bool = False) -> None:
        super().__init__()
        d = config.d_model
        self.merges = merges  # a merge module after self-attention
        self.ff1 = MoEFeedForward(d, config.ff_dim, config.dropout, config.moe) if moe_ff1 \
            else FeedForward(d, config.ff_dim, config.dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = SelfAttention(d, config.num_heads, config.dropout)
        self.attn_dropout = Dropout(config.dropout)
        self.conv = ConvModule(d, config.conv_kernel, config.dropout)
        self.ff2 = MoEFeedForward(d, config.ff_dim, config.dropout, config.moe) if moe_ff2 \
            else FeedForward(d, config.ff_dim, config.dropout)
        self.final_norm = nn.LayerNorm(d)

    @staticmethod
    def _feed_forward(module: nn.Module, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor | None]:
        if isinstance(module, MoEFeedForward):
            return module(x, lens)
        return module(x), None

    def forward(
        self, x: Tensor, tokens: Tokens, rotary: tuple[Tensor, Tensor], cache: LayerState, ctx: PassContext,
        layout: KeyLayout | None = None,
    ) -> tuple[Tensor, Tokens, LayerState | None, list[Tensor], KeyLayout]:
        """x: (B, T, D) tokens described by `tokens`; `layout` when an earlier block of this call
        saw the same tokens and cache layout. Returns the output, the (possibly merged) tokens, the
        new cache (None without a streaming window), MoE balance losses and the layout used."""
        balance: list[Tensor] = []
        layout = layout or KeyLayout.build(cache, tokens, ctx, x.dtype)
        ff, bal = self._feed_forward(self.ff1, x, tokens.lens)
        balance += [bal] if bal is not None else []
        x = x + 0.5 * ff
        cache_key, cache_value = cache.key[:, :, layout.first:], cache.value[:, :, layout.first:]
        attn, key, value, raw_key = self.attn(self.attn_norm(x), rotary, layout.mask, cache_key, cache_value,
                                              layout.bias)
        x = x + self.attn_dropout(attn)
        if self.merges and ctx.merge_values is not None and x.shape[1] > 1 and x.shape[0] > 0:
            x, tokens = self.merge(x, tokens, raw_key.mean(1), ctx)
        conv, conv_cache = self.conv(x, tokens.lens, cache.conv)
        x = x + conv
        ff, bal = self._feed_forward(self.ff2, x, tokens.lens)
        balance += [bal] if bal is not None else []
        x = x + 0.5 * ff
        new_cache = None
        if layout.slots is not None:  # the block's input tokens, not the merged ones: they are its keys
            width = cache.key.shape[2]
            new_cache = LayerState(
                key=scatter_right(torch.cat([cache_key, key.to(cache_key.dtype)], dim=2), layout.slots, width, 2),
                value=scatter_right(torch.cat([cache_value, value.to(cache_value.dtype)], dim=2), layout.slots,
                                    width, 2),
                valid=scatter_right(layout.real, layout.slots, width, 1),
                start=scatter_right(layout.start, layout.slots, width, 1),
                size=scatter_right(layout.size, layout.slots, width, 1),
                conv=conv_cache,
            )
        return self.final_norm(x), tokens, new_cache, balance, layout

    @staticmethod
    def merge(x: Tensor, tokens: Tokens, keys: Tensor, ctx: PassContext) -> tuple[Tensor, Tokens]:
        """keys: (B, T, Dh) attention keys before rotary, averaged over heads."""
        similarity = adjacent_similarity(keys)
        pair_ok = mergeable_pairs(tokens.lens, tokens.start, ctx.chunk_size)
        if ctx.merge_mode == "ratio":
            budget, group = ratio_budget(tokens.lens, tokens.start, ctx.chunk_size, ctx.merge_values)
            chosen = select_pairs(similarity, pair_ok, budget=budget, group=group)
        else:
            chosen = select_pairs(similarity, pair_ok, threshold=ctx.merge_values)
        merged = chosen.sum(1)
        # one read from the device per merge module: whether anything merged, and the new width
        num_merged, width = torch.stack([merged.sum(), (tokens.lens - merged).max()]).tolist()
        if num_merged == 0:
            return x, tokens
        x, lens, start, size = merge_tokens(x, tokens.lens, tokens.start, tokens.size, chosen, width)
        return x, Tokens(lens, start, size)


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


def validate_merge_config(merge: MergeConfig, num_layers: int) -> None:
    """A clear error for a merge configuration the encoder cannot run."""
    if merge.mode not in ("threshold", "ratio"):
        raise ValueError(f"merge.mode must be 'threshold' or 'ratio', got {merge.mode!r}")
    bad_layers = [i for i in merge.layers if not 0 <= i < num_layers]
    if bad_layers or len(set(merge.layers)) != len(merge.layers):
        raise ValueError(f"merge.layers must be distinct block indices in [0, {num_layers}), got {list(merge.layers)}")
    names = merge.granularities
    if not names or len(set(names)) != len(names) or "auto" in names:
        raise ValueError(f"merge.granularities must be distinct names (not 'auto'), got {list(names)}")
    if not len(merge.values) == len(merge.loss_weights) == len(names):
        raise ValueError(f"merge.values and merge.loss_weights need one entry per granularity {list(names)}")
    for name, value in zip(names, merge.values):
        validate_merge_value(merge.mode, value, name)
    if any(w < 0 for w in merge.loss_weights) or not any(w > 0 for w in merge.loss_weights):
        raise ValueError(f"merge.loss_weights must be >= 0 with at least one > 0, got {list(merge.loss_weights)}")


def validate_merge_value(mode: str, value: float, name: str = "") -> None:
    label = f" of granularity {name!r}" if name else ""
    if mode == "threshold" and not -1.0 <= value <= 1.0:
        raise ValueError(f"merge threshold{label} must be a cosine in [-1, 1] (1.0 merges nothing), got {value}")
    if mode == "ratio" and not 0.0 <= value <= MAX_RATIO:
        raise ValueError(f"merge ratio{label} must be in [0, {MAX_RATIO}] (0 merges nothing), got {value}")


def _output_layers(module: nn.Module) -> list[nn.Linear]:
    """The linear layers that write a block branch's output into the residual stream."""
    if isinstance(module, MoEFeedForward):
        return [expert.down for expert in [*module.experts, *module.shared]]
    if isinstance(module, FeedForward):
        return [module.net[4]]
    if isinstance(module, ConvModule):
        return [module.pointwise_out]
    return [module.out]  # SelfAttention


@torch.no_grad()
def grow_encoder(encoder: "ConformerEncoder", source: "ConformerEncoder") -> int:
    """Start the blocks `encoder` has beyond `source`'s (a trained encoder whose weights it has just
    loaded) as near-identities: every residual branch writes zeros and the final norm is the
    source's last one. The deeper model then decodes almost as the trained one from step 0 (a merge
    module in a new block can still merge). Returns the number of blocks added."""
    added = list(encoder.layers)[len(source.layers):]
    for block in added:
        for branch in (block.ff1, block.attn, block.conv, block.ff2):
            for layer in _output_layers(branch):
                layer.weight.zero_()
                layer.bias.zero_()
        block.final_norm.load_state_dict(source.layers[-1].final_norm.state_dict())
    return len(added)


class ConformerEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        validate_merge_config(config.merge, config.num_layers)
        if config.moe.enabled and not config.merge.layers:
            raise ValueError("MoE feed-forwards follow merge points: set encoder.merge.layers or disable encoder.moe")
        self.config = config
        self.input_norm = FeatureNorm(config.num_features)
        self.subsampling = Conv2dSubsampling(config.num_features, config.d_model, config.subsampling_channels)
        self.rotary = RotaryEmbedding(config.d_model // config.num_heads, config.rotary_base)
        self.dropout = Dropout(config.dropout)
        merge_layers = set(config.merge.layers)
        first_merge = min(merge_layers) if merge_layers else config.num_layers
        moe = config.moe.enabled
        # MoE feed-forwards: every one that sees merged tokens (ff2 of the first merge block on).
        self.layers = nn.ModuleList(
            ConformerBlock(config, merges=i in merge_layers, moe_ff1=moe and i > first_merge,
                           moe_ff2=moe and i >= first_merge)
            for i in range(config.num_layers)
        )
        self.first_merge = first_merge

    @property
    def output_dim(self) -> int:
        return self.config.d_model

    @property
    def granularities(self) -> tuple[str, ...]:
        return self.config.merge.granularities

    def merge_values(self, granularity: str | Sequence[str] | None, batch_size: int,
                     device: torch.device | str) -> Tensor | None:
        """(B,) merge threshold/ratio per row for a granularity name (or one name per row); None
        when nothing would merge. None picks the default (first) granularity."""
        merge = self.config.merge
        names = [granularity] * batch_size if granularity is None or isinstance(granularity, str) \
            else list(granularity)
        if len(names) != batch_size:
            raise ValueError(f"{len(names)} granularities for a batch of {batch_size}")
        names = [merge.granularities[0] if n is None else n for n in names]
        unknown = sorted({n for n in names if n not in merge.granularities})
        if unknown:
            raise ValueError(f"unknown granularity {unknown[0]!r}; this model has {list(merge.granularities)}")
        if not merge.layers:
            return None
        values = [merge.values[merge.granularities.index(n)] for n in names]
        if not any(merge.value_merges(v) for v in values):
            return None
        return torch.tensor(values, dtype=torch.float32, device=device)

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
                start=torch.zeros(batch_size, left_context, dtype=torch.long, device=device),
                size=torch.ones(batch_size, left_context, dtype=torch.long, device=device),
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
        granularity: str | Sequence[str] | None = None,
    ) -> EncoderOutput:
        """
        x: (B, T, F) features, x_lens: (B,). Without `state`: the offline pass under a chunk mask
        (chunk_size <= 0: full context). With `state`: the next piece of each stream; its frames
        are chunked by absolute position, left context is the state's cache size, and T must be
        a multiple of 4 except for a stream's last piece. `granularity` names how much the merge
        modules merge (one name, or one per row); None is the model's default (finest).
        """
        h, tokens, state, ctx = self._front(x, x_lens, state, chunk_size, left_context, granularity)
        return self._blocks(h, tokens, state, ctx, range(len(self.layers)))

    def forward_granularities(
        self, x: Tensor, x_lens: Tensor, names: Sequence[str], chunk_size: int = -1, left_context: int = -1
    ) -> dict[str, EncoderOutput]:
        """Offline passes at several granularities that share the blocks before the first merge
        module (Matryoshka training): one output per name."""
        h, tokens, state, ctx = self._front(x, x_lens, None, chunk_size, left_context, None)
        shared = self._blocks(h, tokens, state, ctx, range(self.first_merge))
        outputs = {}
        for name in names:
            values = self.merge_values(name, x.shape[0], x.device)
            ctx_g = dataclasses.replace(ctx, merge_values=values,
                                        proportional=self.config.merge.proportional_attention and values is not None)
            tokens_g = Tokens(shared.out_lens, shared.start, shared.size)
            out = self._blocks(shared.out, tokens_g, state, ctx_g, range(self.first_merge, len(self.layers)))
            if shared.balance_loss is not None:
                out.balance_loss = shared.balance_loss + (out.balance_loss if out.balance_loss is not None else 0)
            outputs[name] = out
        return outputs

    def _front(self, x, x_lens, state, chunk_size, left_context, granularity):
        """Input checks, normalisation and subsampling. Returns the first tokens, the state to run
        the blocks with (empty caches offline) and the pass context (no cache window offline)."""
        if x.dim() != 3 or x.shape[-1] != self.config.num_features:
            raise ValueError(f"encoder input must be (B, T, {self.config.num_features}), got {tuple(x.shape)}")
        values = self.merge_values(granularity, x.shape[0], x.device)
        stateless = state is None
        if stateless:
            state = self.init_state(x.shape[0], 0, x.device)
        else:
            left_context = state.layers[0].key.shape[2] if state.layers else 0
        h, h_lens, sub_cache = self.subsampling(self.input_norm(x), x_lens, state.subsampling)
        h = self.dropout(h)
        tokens = Tokens.frames(state.num_frames, h_lens, h.shape[1])
        window_start = None if stateless else state.num_frames + h_lens - left_context
        merge = self.config.merge
        ctx = PassContext(chunk_size, left_context, window_start, values, merge.mode,
                          merge.proportional_attention and values is not None)
        return h, tokens, EncoderState(sub_cache, state.layers, state.num_frames), ctx

    def _blocks(self, h: Tensor, tokens: Tokens, state: EncoderState, ctx: PassContext,
                indices: range) -> EncoderOutput:
        """Run blocks `indices` on tokens; when streaming, update those blocks' caches."""
        streaming = ctx.window_start is not None
        balance: list[Tensor] = []
        new_layers = list(state.layers)
        frame_lens = tokens.size.masked_fill(~tokens.real(), 0).sum(1)
        if h.shape[1] > 0:  # a tail of < 4 feature frames only refills the subsampling cache
            rotary = self.rotary(tokens.positions(), h.dtype)
            layout = None
            for i in indices:
                h, merged, new_layers[i], bal, layout = self.layers[i](h, tokens, rotary, state.layers[i], ctx, layout)
                balance += bal
                if merged is not tokens:
                    tokens, layout = merged, None
                    rotary = self.rotary(tokens.positions(), h.dtype)
                elif streaming and self.layers[i].merges:
                    # the next block caches this block's output (merged in earlier chunks), not its
                    # input; blocks without a merge module pass their input tokens on unchanged, so
                    # their successors' caches hold the same tokens and share one layout
                    layout = None
        new_state = EncoderState(state.subsampling, new_layers, state.num_frames + frame_lens) if streaming else None
        return EncoderOutput(h, tokens.lens, new_state, tokens.start, tokens.size,
                             torch.stack(balance).mean() if balance else None)
