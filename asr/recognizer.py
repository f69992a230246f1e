"""Speech in, text out, for one utterance (offline) or one live stream (chunk by chunk).

Both paths share the feature extractor, the encoder and the search; streaming only adds the
encoder state and a small feature buffer. A server batches many streams over the same pieces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from numpy.typing import ArrayLike

from asr.config import StreamingConfig
from asr.decoding import GreedySearch, Hypothesis, Search, StreamingDecoder
from asr.features import StreamingFbank, compute_fbank
from asr.model.conformer import SUBSAMPLING_FACTOR
from asr.model.transducer import Transducer
from asr.tokenizer import Tokenizer


@dataclass(frozen=True)
class TokenTime:
    token_id: int
    piece: str
    start: float  # seconds: start of the encoder token it was emitted on (a merged token spans several frames)
    end: float  # seconds: end of that token


@dataclass(frozen=True)
class WordTime:
    word: str
    start: float  # seconds: start of its first token
    end: float  # seconds: end of its last token


@dataclass(frozen=True)
class Transcript:
    text: str
    tokens: tuple[TokenTime, ...]

    @property
    def words(self) -> tuple[WordTime, ...]:
        """Words with times: sentencepiece marks a word's first piece with "▁"."""
        words: list[WordTime] = []
        for token in self.tokens:
            text = token.piece.replace("▁", "")
            if token.piece.startswith("▁") or not words:
                if text or token.piece.startswith("▁"):
                    words.append(WordTime(text, token.start, token.end))
            else:
                last = words[-1]
                words[-1] = WordTime(last.word + text, last.start, max(last.end, token.end))
        return tuple(w for w in words if w.word)


class Recognizer:
    def __init__(
        self,
        model: Transducer,
        tokenizer: Tokenizer,
        search: Search = GreedySearch(),
        streaming: StreamingConfig = StreamingConfig(),
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.search = search
        self.streaming = streaming
        features = model.config.features
        self.frame_seconds = SUBSAMPLING_FACTOR * features.frame_shift_ms / 1000

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def transcribe(self, samples: ArrayLike, sample_rate: int, full_context: bool = True,
                   granularity: str | None = None) -> Transcript:
        """Offline decode. full_context=False uses the streaming chunk mask (same result as `stream`).
        `granularity` names how coarsely the encoder merges frames (None: the model's finest)."""
        feats = compute_fbank(samples, sample_rate, self.model.config.features).to(self.device)
        chunk, left = (-1, -1) if full_context else (self.streaming.chunk_size, self.streaming.left_context)
        enc = self.model.encoder(feats[None], torch.tensor([feats.shape[0]], device=self.device), chunk_size=chunk,
                                 left_context=left, granularity=granularity)
        decoder = StreamingDecoder(self.model, self.search, 1)
        decoder.accept(enc.out, enc.out_lens, enc.spans)
        return self.to_transcript(decoder.results[0])

    def stream(self, granularity: str | None = None) -> "RecognitionStream":
        return RecognitionStream(self, granularity)

    def to_transcript(self, hyp: Hypothesis) -> Transcript:
        ends = hyp.ends or tuple(f + 1 for f in hyp.frames)
        tokens = tuple(
            TokenTime(t, self.tokenizer.id_to_piece(t), f * self.frame_seconds, e * self.frame_seconds)
            for t, f, e in zip(hyp.tokens, hyp.frames, ends)
        )
        return Transcript(self.tokenizer.decode(list(hyp.tokens)), tokens)


class RecognitionStream:
    """One live stream: feed audio in pieces of any size, read partial results as you go."""

    def __init__(self, recognizer: Recognizer, granularity: str | None = None) -> None:
        self.recognizer = recognizer
        model = recognizer.model
        model.encoder.merge_values(granularity, 1, "cpu")  # an unknown name fails here, not mid-stream
        self.granularity = granularity
        self.chunk_frames = SUBSAMPLING_FACTOR * recognizer.streaming.chunk_size  # feature frames per chunk
        self.fbank = StreamingFbank(model.config.features)
        self.encoder_state = model.encoder.init_state(1, recognizer.streaming.left_context, recognizer.device)
        self.decoder = StreamingDecoder(model, recognizer.search, 1)
        self.pending = torch.empty(0, model.config.features.num_mel_bins)  # features not yet encoded

    @torch.inference_mode()
    def accept_waveform(self, samples: ArrayLike, sample_rate: int) -> Transcript:
        """Add audio; encode and decode every complete chunk; return the partial result."""
        self.pending = torch.cat([self.pending, self.fbank.accept_waveform(samples, sample_rate)])
        while self.pending.shape[0] >= self.chunk_frames:
            self._encode(self.pending[: self.chunk_frames])
            self.pending = self.pending[self.chunk_frames :]
        return self.result

    @torch.inference_mode()
    def finish(self) -> Transcript:
        """Flush the audio's tail (a last, shorter chunk) and return the final result."""
        self.pending = torch.cat([self.pending, self.fbank.finish()])
        while self.pending.shape[0] > 0:
            self._encode(self.pending[: self.chunk_frames])
            self.pending = self.pending[self.chunk_frames :]
        return self.result

    @property
    def result(self) -> Transcript:
        return self.recognizer.to_transcript(self.decoder.results[0])

    def _encode(self, feats: torch.Tensor) -> None:
        rec = self.recognizer
        feats = feats.to(rec.device)
        enc = rec.model.encoder(
            feats[None], torch.tensor([feats.shape[0]], device=rec.device), state=self.encoder_state,
            chunk_size=rec.streaming.chunk_size, granularity=self.granularity,
        )
        self.encoder_state = enc.state
        if enc.out.shape[1]:
            self.decoder.accept(enc.out, enc.out_lens, enc.spans)
