"""Transcript output formats: plain text, JSON, SubRip (SRT) and WebVTT."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    segment: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    granularity: str = ""


@dataclass
class Transcript:
    file: str
    model: str = ""
    granularity: str = ""
    duration: float = 0.0  # seconds of audio decoded
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_text(t: Transcript) -> str:
    return "\n".join(s.text for s in t.segments) + "\n"


def to_json(t: Transcript) -> str:
    return json.dumps({"file": t.file, "model": t.model, "granularity": t.granularity, "duration": t.duration,
                       "text": t.text, "segments": [asdict(s) for s in t.segments]}, indent=2) + "\n"


def to_srt(t: Transcript) -> str:
    blocks = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
              for i, s in enumerate(t.segments, 1)]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


WRITERS = {"text": (to_text, "txt"), "json": (to_json, "json"), "srt": (to_srt, "srt"), "vtt": (to_vtt, "vtt")}
