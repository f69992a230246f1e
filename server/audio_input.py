"""Client audio bytes -> model features, incrementally: decode PCM, resample, streaming fbank.

Everything a client can get wrong about its audio is caught here, with a message that says what
was wrong (an odd byte count for s16le, NaN floats, ...); the stream's earlier audio is untouched.
"""
from __future__ import annotations

import numpy as np
import soxr
import torch

from asr.config import FeatureConfig
from asr.features import StreamingFbank


class AudioError(ValueError):
    """Audio the server cannot use; the message says why."""


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """Raw mono PCM -> float32 samples in [-1, 1]. s16le: 2 bytes per sample; f32le: 4."""
    width = 2 if encoding == "s16le" else 4
    if len(data) % width:
        raise AudioError(f"{encoding} audio has {width} bytes per sample; got a message of {len(data)} bytes")
    if encoding == "s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise AudioError("f32le audio contains NaN or infinite samples")
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.5:
        raise AudioError(f"f32le audio must lie in [-1, 1]; it peaks at {peak:.4g} (int16 values sent as float?)")
    return samples


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
        self.samples_received += samples.size
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples, last=False)
        return self.fbank.accept_waveform(samples, self.model_rate)

    def finish(self) -> torch.Tensor:
        """The last frames, once the client says its audio is over."""
        frames = []
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            frames.append(self.fbank.accept_waveform(tail, self.model_rate))
        frames.append(self.fbank.finish())
        return torch.cat(frames)
