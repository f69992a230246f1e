"""Client audio bytes -> model features, incrementally: decode PCM, resample, streaming fbank.

Everything a client can get wrong about its audio is caught here, with a message that says what
was wrong (an odd byte count for s16le, NaN floats, ...); the stream's earlier audio is untouched.
"""
from __future__ import annotations

import numpy as np
import soxr
import torch

from asr.audio import validate_waveform
from asr.config import FeatureConfig
from asr.features import StreamingFbank


class AudioError(ValueError):
    """Audio the server cannot use; the message says why."""


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """Raw mono PCM -> samples: int16 for s16le, float32 for f32le (checked and scaled by
    asr.audio.validate_waveform, the same checks every other input path gets)."""
    width = 2 if encoding == "s16le" else 4
    if len(data) % width:
        raise AudioError(f"{encoding} audio has {width} bytes per sample; got a message of {len(data)} bytes")
    return np.frombuffer(data, dtype="<i2" if encoding == "s16le" else "<f4").copy()  # writable, for torch


class AudioInput:
    """One stream's audio front end: bytes in, fbank frames out, any client sample rate."""

    def __init__(self, encoding: str, sample_rate: int, features: FeatureConfig) -> None:
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.model_rate = features.sample_rate
        self.resampler = (soxr.ResampleStream(sample_rate, self.model_rate, 1, dtype="float32", quality="HQ")
                          if sample_rate != self.model_rate else None)
        self.fbank = StreamingFbank(features)
        self.samples_received = 0  # at the client's rate

    @property
    def seconds_received(self) -> float:
        return self.samples_received / self.sample_rate

    def accept(self, data: bytes) -> torch.Tensor:
        """(N, num_mel_bins) fbank frames that became ready; N may be 0."""
        samples = decode_pcm(data, self.encoding)
        try:
            if self.resampler is None:  # the fbank validates and scales its input itself
                frames = self.fbank.accept_waveform(samples, self.model_rate)
            else:  # validate before resampling: soxr would smear a NaN over its neighbours
                waveform = validate_waveform(samples, self.sample_rate, self.sample_rate, f"{self.encoding} audio",
                                             allow_empty=True)
                frames = self.fbank.accept_waveform(self.resampler.resample_chunk(waveform.numpy(), last=False),
                                                    self.model_rate)
        except ValueError as error:
            raise AudioError(str(error)) from None
        self.samples_received += samples.size
        return frames

    def finish(self) -> torch.Tensor:
        """The last frames, once the client says its audio is over."""
        frames = []
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            frames.append(self.fbank.accept_waveform(tail, self.model_rate))
        frames.append(self.fbank.finish())
        return torch.cat(frames)
