"""Batched greedy search, up to `max_symbols_per_frame` tokens per encoder frame."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr.decoding.hypothesis import SearchState, frame_spans, project_contexts


@dataclass(frozen=True)
class GreedySearch:
    max_symbols_per_frame: int = 3  # bounds the work per frame, whatever the model does
    # Frames scored per joiner call. Most frames emit blank, so one call over a window of frames
    # finds where a stream's next token goes; a frame-by-frame loop would make one call per frame.
    # The result is the frame-by-frame greedy search exactly: the frames before the first
    # non-blank saw the same decoder state, and everything after it is scored again.
    window: int = 16

    @torch.inference_mode()
    def step(self, model, encoder_out: Tensor, encoder_lens: Tensor, states: list[SearchState],
             spans: Tensor | None = None) -> None:
        """encoder_out (B, T, D), encoder_lens (B,): extend each stream's single hypothesis.
        spans (B, T, 2): the frames each encoder token covers (merged tokens), or None."""
        joiner, blank = model.joiner, model.blank_id
        device = encoder_out.device
        num = encoder_out.shape[1]
        enc_proj = joiner.encoder_proj(encoder_out)  # (B, T, J)
        hyps = [s.best for s in states]
        dec_proj = project_contexts(model, hyps, device)  # (B, J)
        lens = encoder_lens.tolist()
        token_frames = frame_spans(states, lens, spans)
        frame = [0] * len(states)  # the next frame each stream scores
        emitted = [0] * len(states)  # tokens already emitted on that frame
        width = max(1, min(self.window, num))
        offsets = torch.arange(width, device=device)
        while True:
            active = [b for b, n in enumerate(lens) if frame[b] < n]
            if not active:
                break
            rows = torch.tensor(active, device=device)
            first = torch.tensor([frame[b] for b in active], device=device)
            index = (first[:, None] + offsets).clamp(max=num - 1)  # (N, W); frames past the end are ignored
            log_probs = joiner(enc_proj[rows[:, None], index], dec_proj[rows][:, None]).log_softmax(-1)
            best_lp, best = log_probs.max(dim=-1)  # (N, W)
            best_lp, best = best_lp.tolist(), best.tolist()
            changed = []
            for i, b in enumerate(active):
                t = frame[b]
                for k in range(min(width, lens[b] - t)):
                    if k == 0 and emitted[b] >= self.max_symbols_per_frame:
                        continue  # this frame has had its tokens: on to the next, as a blank would
                    if best[i][k] == blank:
                        hyps[b] = hyps[b].rescored(hyps[b].log_prob + best_lp[i][k])
                        continue
                    start, end = token_frames[b][t + k]
                    hyps[b] = hyps[b].extend(best[i][k], start, hyps[b].log_prob + best_lp[i][k], end)
                    emitted[b] = emitted[b] + 1 if k == 0 else 1
                    frame[b] = t + k
                    changed.append(b)
                    break
                else:  # every frame of the window was blank (or spent): the stream moves past it
                    frame[b] = min(lens[b], t + width)
                    emitted[b] = 0
            if changed:
                dec_proj[torch.tensor(changed, device=device)] = project_contexts(model, [hyps[b] for b in changed],
                                                                                   device)
        for b, state in enumerate(states):
            state.hyps = [hyps[b]]
            state.num_frames += lens[b]
