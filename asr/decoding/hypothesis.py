"""Hypotheses and per-stream search state shared by every search strategy."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...] = ()  # emitted token ids, blanks excluded
    frames: tuple[int, ...] = ()  # first encoder frame (absolute in the stream) of the token it was emitted on
    log_prob: float = 0.0
    ends: tuple[int, ...] = ()  # end (exclusive) of that token's frames: a merged token covers several

    def context(self, size: int, blank_id: int) -> list[int]:
        """The last `size` tokens, left-padded with blank: the stateless decoder's input."""
        history = list(self.tokens[-size:])
        return [blank_id] * (size - len(history)) + history

    def extend(self, token: int, frame: int, log_prob: float, end: int | None = None) -> "Hypothesis":
        end = frame + 1 if end is None else end
        return Hypothesis(self.tokens + (token,), self.frames + (frame,), log_prob, self.ends + (end,))

    def rescored(self, log_prob: float) -> "Hypothesis":
        return Hypothesis(self.tokens, self.frames, log_prob, self.ends)


@dataclass
class SearchState:
    """What one stream's search keeps between chunks: its hypotheses, best first."""

    hyps: list[Hypothesis] = field(default_factory=lambda: [Hypothesis()])
    num_frames: int = 0  # encoder output tokens consumed so far (frames, without merging)

    @property
    def best(self) -> Hypothesis:
        return self.hyps[0]


def project_contexts(model, hyps: list["Hypothesis"], device: torch.device) -> Tensor:
    """The joiner's decoder-side input for each hypothesis, (N, J): the stateless decoder on its
    last `context_size` tokens, projected once so every frame's joint step reuses it."""
    size, blank = model.decoder.context_size, model.blank_id
    contexts = torch.tensor([h.context(size, blank) for h in hyps], device=device)  # (N, context)
    return model.joiner.decoder_proj(model.decoder(contexts))[:, 0]


def frame_spans(states: list[SearchState], lens: list[int], spans: Tensor | None) -> list[list[tuple[int, int]]]:
    """Per stream, the (first frame, end frame) of each of its next `lens[b]` encoder tokens.
    spans: (B, T, 2) absolute [start, end) per token, or None for unmerged frames numbered on
    from what each stream consumed."""
    if spans is None:
        return [[(s.num_frames + t, s.num_frames + t + 1) for t in range(n)] for s, n in zip(states, lens)]
    rows = spans.tolist()
    return [[tuple(span) for span in row[:n]] for row, n in zip(rows, lens)]


class Search(Protocol):
    """A decoding strategy. `step` consumes one piece of encoder output for a batch of streams
    (offline = one piece holding everything), so offline and streaming share one code path."""

    def step(self, model, encoder_out: Tensor, encoder_lens: Tensor, states: list[SearchState],
             spans: Tensor | None = None) -> None: ...
