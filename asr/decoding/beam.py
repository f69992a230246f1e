"""Modified beam search: at most one token per frame, `beam` hypotheses per stream, batched
over all hypotheses of all streams."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from asr.decoding.hypothesis import Hypothesis, SearchState, project_contexts, frame_spans


@dataclass(frozen=True)
class ModifiedBeamSearch:
    beam: int = 4

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")

    @torch.inference_mode()
    def step(self, model, encoder_out: Tensor, encoder_lens: Tensor, states: list[SearchState],
             spans: Tensor | None = None) -> None:
        """encoder_out (B, T, D), encoder_lens (B,): advance every stream's beam frame by frame.
        spans (B, T, 2): the frames each encoder token covers (merged tokens), or None."""
        joiner, blank = model.joiner, model.blank_id
        device = encoder_out.device
        enc_proj = joiner.encoder_proj(encoder_out)  # (B, T, J)
        lens = encoder_lens.tolist()
        token_frames = frame_spans(states, lens, spans)
        for t in range(encoder_out.shape[1]):
            active = [b for b, n in enumerate(lens) if t < n]
            if not active:
                break
            flat = [(b, h) for b in active for h in states[b].hyps]  # every hypothesis of every stream
            dec_proj = project_contexts(model, [h for _, h in flat], device)  # (N, J)
            stream_rows = torch.tensor([b for b, _ in flat], device=device)
            log_probs = joiner(enc_proj[stream_rows, t], dec_proj).log_softmax(-1)  # (N, V)
            scores = log_probs + torch.tensor([h.log_prob for _, h in flat], device=device)[:, None]
            start = 0
            for b in active:
                count = len(states[b].hyps)
                states[b].hyps = self._next_beam(
                    states[b].hyps, scores[start : start + count], blank, token_frames[b][t]
                )
                start += count
        for b, state in enumerate(states):
            state.num_frames += lens[b]

    def _next_beam(self, hyps: list[Hypothesis], scores: Tensor, blank: int,
                   frames: tuple[int, int]) -> list[Hypothesis]:
        """scores (K, V): pick the best `beam` extensions, merging equal token sequences."""
        vocab = scores.shape[1]
        top_scores, top_index = scores.flatten().topk(min(self.beam, scores.numel()))
        merged: dict[tuple[int, ...], Hypothesis] = {}
        for score, index in zip(top_scores.tolist(), top_index.tolist()):
            hyp, token = hyps[index // vocab], index % vocab
            new = hyp.rescored(score) if token == blank else hyp.extend(token, frames[0], score, frames[1])
            old = merged.get(new.tokens)
            if old is not None:  # two paths to the same text: sum their probabilities
                new = old.rescored(_logaddexp(old.log_prob, new.log_prob))
            merged[new.tokens] = new
        return sorted(merged.values(), key=lambda h: h.log_prob, reverse=True)


def _logaddexp(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))
