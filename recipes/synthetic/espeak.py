"""Speak English text with espeak-ng and return 16 kHz float32 audio."""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: an espeak-ng voice + variant, speed (words/min) and pitch (0-99)."""

    name: str = "en-us"
    variant: str = ""  # e.g. "m3", "f2"; empty for the voice's default
    speed: int = 160
    pitch: int = 50

    @property
    def espeak_voice(self) -> str:
        return f"{self.name}+{self.variant}" if self.variant else self.name


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: Voice = Voice(), sample_rate: int = 16000) -> np.ndarray:
    """(N,) float32 audio in [-1, 1] at `sample_rate` for `text`."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    command = ["espeak-ng", "-v", voice.espeak_voice, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", text]
    wav = subprocess.run(command, check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != sample_rate:
        g = gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)
