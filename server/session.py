"""One stream, free of any transport: its audio front end, typed encoder state, search state,
endpointing and segment index, and the queue of events its transport sends to the client."""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import torch

from asr.decoding.hypothesis import SearchState
from asr.model.state import EncoderState
from asr.recognizer import TokenTime, WordTime
from server.audio_input import AudioInput
from server.options import EndpointOptions, StreamOptions

_ids = itertools.count(1)


@dataclass(frozen=True)
class Partial:
    segment: int
    text: str
    granularity: str
    decoded: float  # seconds of the stream's audio this result covers (for latency measurements)


@dataclass(frozen=True)
class Final:
    segment: int
    text: str
    start: float  # seconds from the start of the stream
    end: float
    words: tuple[WordTime, ...]  # empty unless the client asked for timestamps
    granularity: str
    tokens: tuple[TokenTime, ...] = ()  # BPE pieces with times; empty unless timestamps were asked for


@dataclass(frozen=True)
class Progress:
    seconds: float  # audio decoded so far


@dataclass(frozen=True)
class Done:
    seconds: float  # audio decoded in all


@dataclass(frozen=True)
class Failed:
    code: str  # e.g. bad_audio, internal
    message: str


Event = Partial | Final | Progress | Done | Failed


def endpoint_reason(rules: EndpointOptions, frames_decoded: int, segment_start: int, last_token_end: int | None,
                    frame_seconds: float) -> str | None:
    """Which endpoint rule fires now, if any. Silence is the time since the segment's last token
    (or since its start, when it has none); frames are 40 ms encoder frames."""
    silence = (frames_decoded - (segment_start if last_token_end is None else last_token_end)) * frame_seconds
    length = (frames_decoded - segment_start) * frame_seconds
    if last_token_end is not None and rules.silence_after_speech and silence >= rules.silence_after_speech:
        return "silence_after_speech"
    if last_token_end is None and rules.silence_without_speech and silence >= rules.silence_without_speech:
        return "silence_without_speech"
    if rules.max_segment and length >= rules.max_segment:
        return "max_segment"
    return None


@dataclass(eq=False)
class Session:
    options: StreamOptions
    audio: AudioInput
    encoder_state: EncoderState
    search: SearchState
    granularity: str  # the one in use now; with options.granularity == "auto" the engine moves it
    id: str = field(default_factory=lambda: f"s{next(_ids)}")
    features: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))  # (N, F) not yet encoded
    segment: int = 0
    segment_start: int = 0  # encoder frame where the current segment began
    frames_decoded: int = 0  # encoder frames (40 ms, before merging) through the encoder so far
    ending: bool = False  # the client said its audio is over
    endpoint_requested: bool = False
    done: bool = False
    closed: bool = False
    scheduled: bool = False  # waiting in the engine's queue or in the batch being computed
    chunk_ready_at: float = 0.0  # monotonic time the oldest unencoded chunk became complete
    last_partial: str = ""
    created: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set when decoding made room for more audio
