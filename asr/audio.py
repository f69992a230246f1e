"""Audio input validation and loading.

Every waveform that reaches feature extraction passes through :func:`validate_waveform`, so a
client that sends the wrong dtype, rate or channel layout gets a ValueError that says what to fix
instead of silently producing garbage features.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import numpy as np
import soundfile
import torch
from scipy.signal import resample_poly

ArrayLike = Union[np.ndarray, torch.Tensor]

# int16 PCM stored as float has peaks in the hundreds or thousands; real [-1, 1] audio that was
# resampled or lightly clipped can overshoot 1 a little, so the bound is loose.
MAX_FLOAT_PEAK = 1.5

_ACCEPTED = "int16 (scaled by 1/32768) or float32/float64 in [-1, 1]"


def validate_waveform(
    samples: ArrayLike,
    sample_rate: int,
    expected_rate: int,
    name: str = "audio",
    *,
    allow_empty: bool = False,
    max_peak: float = MAX_FLOAT_PEAK,
) -> torch.Tensor:
    """Check one mono waveform and convert it to float32 in [-1, 1].

    Args:
        samples: (N,), (1, N) or (N, 1) numpy array or torch tensor, int16 or float32/float64.
        sample_rate: rate of `samples` in Hz.
        expected_rate: rate the model was trained on; no silent resampling happens here.
        name: how error messages refer to the input (e.g. a file name or stream id).
        allow_empty: streaming chunks may be empty; whole utterances may not.
        max_peak: largest accepted |sample| of float input.

    Returns:
        (N,) float32 tensor on CPU. It may share memory with a float32 input.

    Raises:
        ValueError: on any input the model would misread; the message says how to fix it.
    """
    if sample_rate != expected_rate:
        raise ValueError(
            f"{name}: sample rate {sample_rate} Hz does not match the model's {expected_rate} Hz; resample first"
        )
    waveform = _to_float32(samples, name)
    waveform = _to_mono(waveform, name)
    if waveform.numel() == 0:
        if allow_empty:
            return waveform
        raise ValueError(f"{name}: audio is empty (0 samples)")
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    peak = float(waveform.abs().max())
    if peak > max_peak:
        raise ValueError(
            f"{name}: float audio peaks at {peak:.4g}, outside the expected [-1, 1] range; "
            "if these are int16 values stored as float, divide by 32768 (or send int16)"
        )
    return waveform


def _to_float32(samples: ArrayLike, name: str) -> torch.Tensor:
    """Any accepted dtype -> float32 tensor in [-1, 1]; shape unchanged."""
    if isinstance(samples, torch.Tensor):
        tensor = samples.detach().cpu()
        if tensor.dtype == torch.int16:
            return tensor.to(torch.float32) / 32768.0
        if tensor.dtype in (torch.float32, torch.float64):
            return tensor.to(torch.float32)
        dtype_name = str(tensor.dtype)
    elif isinstance(samples, np.ndarray):
        # kind/itemsize rather than `== np.int16` so that big-endian arrays are accepted too.
        kind, itemsize = samples.dtype.kind, samples.dtype.itemsize
        if kind == "i" and itemsize == 2:
            array = np.ascontiguousarray(samples, dtype=np.int16)
            return torch.from_numpy(array).to(torch.float32) / 32768.0
        if kind == "f" and itemsize in (4, 8):
            return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        dtype_name = str(samples.dtype)
    else:
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(samples).__name__}")
    raise ValueError(f"{name}: unsupported sample dtype {dtype_name}; expected {_ACCEPTED}")


def _to_mono(waveform: torch.Tensor, name: str) -> torch.Tensor:
    """(N,), (1, N) or (N, 1) -> (N,). Real multi-channel audio is refused, not averaged:
    averaging silently changes levels and phase, and the caller knows its channels better."""
    if waveform.dim() == 1:
        return waveform
    if waveform.dim() == 2 and 1 in waveform.shape:
        return waveform.reshape(-1)
    raise ValueError(
        f"{name}: expected mono audio of shape (N,), (1, N) or (N, 1), got shape {tuple(waveform.shape)}; "
        "mix down to mono first"
    )


def load_audio(path: Union[str, Path], expected_rate: int) -> torch.Tensor:
    """Read an audio file, mix it down to mono and resample it to `expected_rate`.

    A file is unambiguous about its channels and rate, so unlike :func:`validate_waveform`
    this converts both instead of refusing.

    Returns:
        (N,) float32 tensor in [-1, 1] at `expected_rate`.
    """
    try:
        data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (RuntimeError, OSError) as error:  # LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read audio file {path}: {error}") from error
    mono = data.mean(axis=1)  # (N,)
    if file_rate != expected_rate:
        divisor = math.gcd(int(file_rate), int(expected_rate))
        mono = resample_poly(mono, expected_rate // divisor, file_rate // divisor).astype(np.float32)
    return validate_waveform(mono, expected_rate, expected_rate, name=str(path))
