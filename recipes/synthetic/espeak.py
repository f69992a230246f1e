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
    """A synthetic speaker: an espeak-ng voice + variant, speed (words/min), pitch (0-99) and amplitude."""

    name: str = "en-us"
    variant: str = ""  # e.g. "m3", "f2"; empty for the voice's default
    speed: int = 160
    pitch: int = 50
    amplitude: int = 100  # espeak-ng -a (0-200); some variants clip at the default 100

    @property
    def espeak_voice(self) -> str:
        return f"{self.name}+{self.variant}" if self.variant else self.name


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: Voice = Voice(), sample_rate: int = 16000) -> np.ndarray:
    """(N,) float32 audio in [-1, 1] at `sample_rate` for `text`."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    command = ["espeak-ng", "-v", voice.espeak_voice, "-s", str(voice.speed), "-p", str(voice.pitch),
               "-a", str(voice.amplitude), "--stdout", text]
    wav = subprocess.run(command, check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != sample_rate:
        g = gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def installed_variants() -> set[str]:
    """Names usable after "+" in `-v en-us+NAME`. espeak-ng silently falls back to the plain voice
    for an unknown variant, so callers check their choices against this set."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True).stdout
    return {line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if len(line.split()) >= 5}


def trim_silence(audio: np.ndarray, sample_rate: int = 16000, keep_seconds: float = 0.15,
                 threshold: float = 0.003) -> np.ndarray:
    """Cut leading/trailing silence (|x| below `threshold` of full scale; espeak-ng's is near zero) down
    to `keep_seconds` each side."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    keep = int(keep_seconds * sample_rate)
    return audio[max(0, loud[0] - keep): loud[-1] + 1 + keep]


def limit_peak(audio: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """Scale down (never up) so that max |x| <= `peak`."""
    top = float(np.abs(audio).max(initial=0.0))
    return audio * (peak / top) if top > peak else audio
