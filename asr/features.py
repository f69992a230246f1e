"""Log-mel filterbank features: one extractor for training, offline decoding and streaming.

Everything goes through :class:`StreamingFbank` (kaldi-native-fbank's ``OnlineFbank``):
:func:`compute_fbank` feeds it a whole waveform, the server feeds it chunks, and lhotse computes
training features with :class:`KaldiNativeFbank`, which calls :func:`compute_fbank`. With
``dither=0`` all three give bit-identical frames for the same audio.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

import kaldi_native_fbank as knf
import numpy as np
import torch
from lhotse.features.base import FeatureExtractor, register_extractor

from asr.audio import MAX_FLOAT_PEAK, ArrayLike, validate_waveform
from asr.config import FeatureConfig

# lhotse applies augmentation (volume perturbation, noise mixing) before extraction, which can
# push real audio past the server's bound; int16-stored-as-float is still caught at this level.
AUGMENTED_MAX_PEAK = 16.0


def fbank_options(config: FeatureConfig) -> knf.FbankOptions:
    """kaldi-native-fbank options for `config`; its defaults differ from lhotse's, so set them all."""
    options = knf.FbankOptions()
    options.frame_opts.samp_freq = float(config.sample_rate)
    options.frame_opts.frame_length_ms = config.frame_length_ms
    options.frame_opts.frame_shift_ms = config.frame_shift_ms
    options.frame_opts.dither = config.dither
    # snip_edges=False centres frames on multiples of the shift, so the frame count depends only
    # on the number of samples (see `num_frames`) and matches lhotse's duration arithmetic.
    options.frame_opts.snip_edges = False
    options.mel_opts.num_bins = config.num_mel_bins
    options.mel_opts.high_freq = config.mel_high_freq
    return options


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames produced for `num_samples` samples: Kaldi's snip_edges=False formula.

    This is round-half-up of N / shift, not Python's round(): 400 samples give 3 frames.
    """
    shift = config.shift_samples
    return (num_samples + shift // 2) // shift


class StreamingFbank:
    """Incremental log-mel fbank over a stream of audio chunks of any size.

    Frames are returned as soon as kaldi-native-fbank can compute them; the last few need
    right context and arrive only from :meth:`finish`.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig(), *, max_peak: float = MAX_FLOAT_PEAK) -> None:
        self.config = config
        self._max_peak = max_peak
        self._fbank = knf.OnlineFbank(fbank_options(config))
        self._num_samples = 0
        self._num_frames_emitted = 0
        self._finished = False

    @property
    def num_frames_emitted(self) -> int:
        """Frames returned so far by accept_waveform and finish."""
        return self._num_frames_emitted

    @property
    def num_samples_accepted(self) -> int:
        return self._num_samples

    def accept_waveform(self, samples: ArrayLike, sample_rate: Optional[int] = None) -> torch.Tensor:
        """Add a chunk (possibly empty) and return the frames that became ready.

        Args:
            samples: (N,) chunk, any dtype :func:`validate_waveform` accepts.
            sample_rate: rate of the chunk; defaults to the configured rate.

        Returns:
            (N_new, num_mel_bins) float32 tensor, N_new >= 0.
        """
        if self._finished:
            raise RuntimeError("accept_waveform() called after finish(); start a new StreamingFbank")
        rate = self.config.sample_rate if sample_rate is None else sample_rate
        waveform = validate_waveform(
            samples, rate, self.config.sample_rate, "audio", allow_empty=True, max_peak=self._max_peak
        )
        if waveform.numel() > 0:
            self._fbank.accept_waveform(self.config.sample_rate, waveform.numpy())
            self._num_samples += waveform.numel()
        return self._pop_ready_frames()

    def finish(self) -> torch.Tensor:
        """End the stream and return the remaining frames, (N_rest, num_mel_bins).

        Raises:
            ValueError: if the whole stream was shorter than one analysis window.
        """
        if self._finished:
            return self._empty()
        self._finished = True
        window = self.config.window_samples
        if self._num_samples < window:
            got = "the stream was empty" if self._num_samples == 0 else f"{self._num_samples} samples < {window}"
            raise ValueError(f"audio shorter than one {self.config.frame_length_ms:g} ms frame ({got})")
        self._fbank.input_finished()
        return self._pop_ready_frames()

    def _pop_ready_frames(self) -> torch.Tensor:
        first, end = self._num_frames_emitted, self._fbank.num_frames_ready
        if end == first:
            return self._empty()
        # get_frame returns a view into the extractor's buffer: np.stack copies it before pop frees it.
        frames = np.stack([self._fbank.get_frame(index) for index in range(first, end)])  # (N_new, F)
        # Dropping returned frames keeps memory flat over an hours-long stream; knf keeps indices absolute.
        self._fbank.pop(end - first)
        self._num_frames_emitted = end
        return torch.from_numpy(frames)

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, self.config.num_mel_bins, dtype=torch.float32)


def compute_fbank(
    samples: ArrayLike,
    sample_rate: int,
    config: FeatureConfig = FeatureConfig(),
    *,
    max_peak: float = MAX_FLOAT_PEAK,
) -> torch.Tensor:
    """Fbank of a whole utterance: (N,) samples -> (T, num_mel_bins), T = num_frames(N).

    Deliberately the streaming extractor fed once, so offline and streaming cannot drift apart.
    """
    extractor = StreamingFbank(config, max_peak=max_peak)
    head = extractor.accept_waveform(samples, sample_rate)
    return torch.cat([head, extractor.finish()])


@dataclass(frozen=True)
class KaldiNativeFbankConfig(FeatureConfig):
    """FeatureConfig plus the to_dict/from_dict that lhotse uses to (de)serialize extractor configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "KaldiNativeFbankConfig":
        return KaldiNativeFbankConfig(**data)

    @staticmethod
    def from_feature_config(config: FeatureConfig) -> "KaldiNativeFbankConfig":
        return KaldiNativeFbankConfig(**dataclasses.asdict(config))


@register_extractor
class KaldiNativeFbank(FeatureExtractor):
    """lhotse feature extractor over :func:`compute_fbank`, so that training features (on the fly
    or precomputed) are exactly what the server computes."""

    name = "kaldi-native-fbank"
    config_type = KaldiNativeFbankConfig

    def __init__(self, config: Optional[Union[KaldiNativeFbankConfig, FeatureConfig]] = None) -> None:
        if config is not None and not isinstance(config, KaldiNativeFbankConfig):
            config = KaldiNativeFbankConfig.from_feature_config(config)
        super().__init__(config=config)

    @property
    def frame_shift(self) -> float:
        """Seconds between frames."""
        return self.config.frame_shift_ms / 1000.0

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins

    def extract(self, samples: ArrayLike, sampling_rate: int) -> ArrayLike:
        """(N,) or (1, N) samples -> (T, num_mel_bins), same array type as the input."""
        features = compute_fbank(samples, sampling_rate, self.config, max_peak=AUGMENTED_MAX_PEAK)
        return features if isinstance(samples, torch.Tensor) else features.numpy()
