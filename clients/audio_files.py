"""Read recordings of any common format, rate and channel count as mono float32 blocks, without
holding hours of audio in memory: soundfile (WAV, FLAC, OGG, MP3) or, when present, ffmpeg."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

BLOCK_SECONDS = 2.0


class AudioFileError(ValueError):
    """A file that cannot be read as audio; the message names it and says why."""


@dataclass(frozen=True)
class AudioFile:
    path: Path
    sample_rate: int
    duration: float  # seconds (0 when unknown, e.g. through ffmpeg)
    reader: str  # soundfile or ffmpeg

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks of BLOCK_SECONDS at the file's own rate (the server resamples)."""
        if self.reader == "soundfile":
            size = int(self.sample_rate * BLOCK_SECONDS)
            for block in sf.blocks(str(self.path), blocksize=size, dtype="float32", always_2d=True):
                yield block.mean(axis=1).astype(np.float32)
            return
        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(self.path), "-f", "f32le", "-ac", "1",
                   "-ar", str(self.sample_rate), "-"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            size = int(self.sample_rate * BLOCK_SECONDS) * 4
            while chunk := process.stdout.read(size):
                yield np.frombuffer(chunk[: len(chunk) // 4 * 4], dtype="<f4").copy()
            if process.wait() != 0:
                raise AudioFileError(f"{self.path}: ffmpeg could not decode it: "
                                     f"{process.stderr.read().decode(errors='replace').strip()[:200]}")


def open_audio(path: str | Path) -> AudioFile:
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty")
    try:
        info = sf.info(str(path))
    except Exception as error:
        if shutil.which("ffmpeg"):
            return AudioFile(path, 16000, 0.0, "ffmpeg")
        raise AudioFileError(f"{path}: not an audio file soundfile can read ({error}); "
                             "install ffmpeg for other formats") from None
    if info.frames == 0:
        raise AudioFileError(f"{path}: the recording holds no samples")
    return AudioFile(path, info.samplerate, info.frames / info.samplerate, "soundfile")
