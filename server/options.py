"""What a client may choose per stream, checked once at the start of the stream.

Both transports build a `StreamOptions` from the client's start message with `parse_options`, so
the names, defaults and error messages are the same over WebSocket and gRPC.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

ENCODINGS = ("s16le", "f32le")
DECODINGS = ("greedy", "beam")
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000


class OptionsError(ValueError):
    """A start message the server cannot honour; the message names the field and what is valid."""


@dataclass(frozen=True)
class EndpointOptions:
    """When a segment ends, as in production recognisers (seconds; 0 turns a rule off)."""

    silence_after_speech: float = 1.0  # trailing silence that ends a segment with speech in it
    silence_without_speech: float = 5.0  # silence with no speech that restarts the segment quietly
    max_segment: float = 20.0  # a segment this long ends wherever it is


@dataclass(frozen=True)
class StreamOptions:
    sample_rate: int = 16000  # of the client's audio; the server resamples to the model's rate
    encoding: str = "s16le"  # s16le (16-bit little-endian PCM) or f32le (32-bit float in [-1, 1])
    granularity: str = "auto"  # a granularity of the model, or auto (the server chooses under load)
    interim_results: bool = True  # send partial results while a segment is spoken
    decoding: str = "greedy"  # greedy or beam
    timestamps: bool = True  # words with start/end times in final results
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)


def parse_options(message: Mapping[str, Any], granularities: Sequence[str],
                  ignore: Sequence[str] = ("type",)) -> StreamOptions:
    """StreamOptions from a start message (a JSON object); every problem is an OptionsError that
    names the field. `granularities` are the model's; `ignore` are envelope keys such as "type"."""
    known = {f.name: f for f in dataclasses.fields(StreamOptions)}
    unknown = sorted(set(message) - set(known) - set(ignore))
    if unknown:
        raise OptionsError(f"unknown field(s) {unknown}; valid: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in message.items():
        if name in ignore:
            continue
        if name == "endpoint":
            values[name] = _parse_endpoint(value)
            continue
        default = getattr(StreamOptions(), name)
        values[name] = _typed(name, value, type(default))
    options = StreamOptions(**values)
    if not MIN_SAMPLE_RATE <= options.sample_rate <= MAX_SAMPLE_RATE:
        raise OptionsError(f"sample_rate {options.sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if options.encoding not in ENCODINGS:
        raise OptionsError(f"encoding {options.encoding!r} is not one of {list(ENCODINGS)}")
    if options.decoding not in DECODINGS:
        raise OptionsError(f"decoding {options.decoding!r} is not one of {list(DECODINGS)}")
    if options.granularity != "auto" and options.granularity not in granularities:
        raise OptionsError(f"granularity {options.granularity!r} is not one of {['auto', *granularities]}")
    return options


def _parse_endpoint(value: Any) -> EndpointOptions:
    if not isinstance(value, Mapping):
        raise OptionsError(f"endpoint must be an object with {[f.name for f in dataclasses.fields(EndpointOptions)]}")
    known = {f.name for f in dataclasses.fields(EndpointOptions)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise OptionsError(f"unknown endpoint field(s) {unknown}; valid: {sorted(known)}")
    parsed = {name: _typed(f"endpoint.{name}", v, float) for name, v in value.items()}
    for name, seconds in parsed.items():
        if not 0 <= seconds <= 3600:
            raise OptionsError(f"endpoint.{name} must be 0-3600 seconds, got {seconds}")
    return EndpointOptions(**parsed)


def _typed(name: str, value: Any, kind: type) -> Any:
    # JSON has no int/float distinction worth trusting and bool is an int in Python: check strictly.
    if kind is bool:
        if not isinstance(value, bool):
            raise OptionsError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise OptionsError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OptionsError(f"{name} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise OptionsError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"no parser for {kind}")
