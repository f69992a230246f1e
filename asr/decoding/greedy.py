"""Batched greedy search, up to `max_symbols_per_frame` tokens per encoder frame."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr.decoding.hypothesis import SearchState, frame_spans, project_contexts


@dataclass(frozen=True)
class GreedySearch:
    max_symbols_per_frame: int = 3  # bounds the work per frame, whatever the model does

    @torch.inference_mode()
    def step(self, model, encoder_out: Tensor, encoder_lens: Tensor, states: list[SearchState],
             spans: Tensor | None = None) -> None:
        """encoder_out (B, T, D), encoder_lens (B,): extend each stream's single hypothesis.
        spans (B, T, 2): the frames each encoder token covers (merged tokens), or None."""
        joiner, blank = model.joiner, model.blank_id
        device = encoder_out.device
        enc_proj = joiner.encoder_proj(encoder_out)  # (B, T, J)
        hyps = [s.best for s in states]
        dec_proj = project_contexts(model, hyps, device)  # (B, J)
        lens = encoder_lens.tolist()
        token_frames = frame_spans(states, lens, spans)
        for t in range(encoder_out.shape[1]):
            active = [b for b, n in enumerate(lens) if t < n]
            if not active:
                break
            rows = torch.tensor(active, device=device)
            for _ in range(self.max_symbols_per_frame):
                log_probs = joiner(enc_proj[rows, t], dec_proj[rows]).log_softmax(-1)  # (N, V)
                best_lp, best = log_probs.max(dim=-1)
                best_lp, best = best_lp.tolist(), best.tolist()
                emitted = []
                for i, b in enumerate(active):
                    first, end = token_frames[b][t]
                    if best[i] == blank:
                        hyps[b] = hyps[b].rescored(hyps[b].log_prob + best_lp[i])
                    else:
                        hyps[b] = hyps[b].extend(best[i], first, hyps[b].log_prob + best_lp[i], end)
                        emitted.append(b)
                if not emitted:
                    break
                rows_emitted = torch.tensor(emitted, device=device)
                dec_proj[rows_emitted] = project_contexts(model, [hyps[b] for b in emitted], device)
                active, rows = emitted, rows_emitted
        for b, state in enumerate(states):
            state.hyps = [hyps[b]]
            state.num_frames += lens[b]

