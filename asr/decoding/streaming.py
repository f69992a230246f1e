"""A decoder that consumes encoder output chunk by chunk and keeps each stream's hypotheses.

The offline decode is the same object fed one chunk holding the whole utterance.
"""
from __future__ import annotations

from torch import Tensor

from asr.decoding.hypothesis import Hypothesis, Search, SearchState


class StreamingDecoder:
    def __init__(self, model, search: Search, batch_size: int) -> None:
        self.model = model
        self.search = search
        self.states = [SearchState() for _ in range(batch_size)]

    def accept(self, encoder_out: Tensor, encoder_lens: Tensor, spans: Tensor | None = None) -> None:
        """encoder_out (B, T, D), encoder_lens (B,): the next tokens of each stream; spans
        (B, T, 2) the [start, end) encoder frames each covers (see `EncoderOutput.spans`)."""
        if encoder_out.shape[0] != len(self.states):
            raise ValueError(f"decoder holds {len(self.states)} streams, got a batch of {encoder_out.shape[0]}")
        self.search.step(self.model, encoder_out, encoder_lens, self.states, spans)

    @property
    def results(self) -> list[Hypothesis]:
        """The current best hypothesis of each stream (a partial result until the stream ends)."""
        return [s.best for s in self.states]


def decode(model, search: Search, encoder_out: Tensor, encoder_lens: Tensor,
           spans: Tensor | None = None) -> list[Hypothesis]:
    """Offline decode of a batch: one chunk holding everything."""
    decoder = StreamingDecoder(model, search, encoder_out.shape[0])
    decoder.accept(encoder_out, encoder_lens, spans)
    return decoder.results
