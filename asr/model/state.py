"""Typed, batch-first streaming state of the encoder.

Every tensor in a state has the batch on dim 0, so a server can batch streams of different ages
with one generic tree-map: `stack` many single-stream states, `select` rows back out.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import Tensor

S = TypeVar("S")


@dataclass
class LayerState:
    """Cache of one Conformer block.

    key, value: (B, H, L, Dh) attention cache: the block's input tokens that start within the
        last L encoder frames, right-aligned (keys already rotary-encoded at their positions, so
        they never need re-encoding). With token merging a token covers several frames, so fewer
        than L slots are in use.
    valid: (B, L) bool, False for unused slots (a young stream, or merged tokens).
    start, size: (B, L) int64 first encoder frame and number of frames of each cached token.
    conv: (B, D, K-1) the last K-1 inputs of the causal depthwise convolution.
    """

    key: Tensor
    value: Tensor
    valid: Tensor
    start: Tensor
    size: Tensor
    conv: Tensor


@dataclass
class EncoderState:
    """Streaming state of the whole encoder.

    subsampling: (B, 3, F) input feature frames the 4x front-end still needs (its receptive
        field is 7 frames with stride 4; the first 3 are zeros, as in the offline pass).
    layers: one LayerState per Conformer block.
    num_frames: (B,) int64 encoder frames already produced (absolute position of the next one).
    """

    subsampling: Tensor
    layers: list[LayerState]
    num_frames: Tensor

    @property
    def batch_size(self) -> int:
        return self.num_frames.shape[0]


def tree_map(fn: Callable[..., Tensor], *trees: Any) -> Any:
    """Apply `fn` leaf-wise over parallel trees of dataclasses, lists and tensors."""
    first = trees[0]
    if isinstance(first, Tensor):
        return fn(*trees)
    if dataclasses.is_dataclass(first):
        return type(first)(
            **{f.name: tree_map(fn, *(getattr(t, f.name) for t in trees)) for f in dataclasses.fields(first)}
        )
    if isinstance(first, (list, tuple)):
        return type(first)(tree_map(fn, *items) for items in zip(*trees))
    raise TypeError(f"cannot tree-map over {type(first).__name__}")


def stack_states(states: Sequence[S]) -> S:
    """Concatenate states along the batch (each may hold one or more streams)."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    return tree_map(lambda *xs: torch.cat(xs, dim=0), *states)


def select_states(state: S, index: Tensor | Sequence[int]) -> S:
    """The sub-batch of streams at `index` (a list of rows or a LongTensor)."""
    index = torch.as_tensor(index, dtype=torch.long)
    return tree_map(lambda x: x.index_select(0, index.to(x.device)), state)


def unstack_states(state: S) -> list[S]:
    """Split a batched state into one single-stream state per row."""
    batch = _batch_size(state)
    return [tree_map(lambda x, i=i: x[i : i + 1], state) for i in range(batch)]


def states_to(state: S, device: torch.device | str) -> S:
    return tree_map(lambda x: x.to(device), state)


def _batch_size(state: Any) -> int:
    sizes: list[int] = []
    tree_map(lambda x: sizes.append(x.shape[0]) or x, state)
    return sizes[0]
