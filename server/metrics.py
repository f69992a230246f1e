"""Prometheus metrics of one server (its own registry, so tests can run several servers)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.active_sessions = Gauge("asr_active_sessions", "Open streams", registry=registry)
        self.sessions_opened = Counter("asr_sessions_opened", "Streams opened", registry=registry)
        self.refused = Counter("asr_sessions_refused", "Streams refused", ["reason"], registry=registry)
        self.errors = Counter("asr_errors", "Errors sent to clients", ["code"], registry=registry)
        self.audio_seconds = Counter("asr_audio_seconds", "Seconds of audio received", registry=registry)
        self.batch_size = Histogram("asr_batch_size", "Streams per model step", registry=registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.queue_delay = Histogram("asr_queue_delay_seconds", "Time a batch waited to fill", registry=registry,
                                     buckets=LATENCY_BUCKETS)
        self.step_seconds = Histogram("asr_step_seconds", "Compute time of one batched model step",
                                      registry=registry, buckets=LATENCY_BUCKETS)
        self.partial_latency = Histogram("asr_partial_latency_seconds",
                                         "From a chunk's last audio arriving to its result", registry=registry,
                                         buckets=LATENCY_BUCKETS)
        self.stream_step_seconds = Gauge("asr_stream_step_seconds",
                                         "Compute seconds per stream of a step at one granularity (median of recent "
                                         "steps whose streams all used it), by batch size rounded up to a power of "
                                         "two: what auto granularity compares", ["granularity", "batch"],
                                         registry=registry)
        self.auto_level = Gauge("asr_auto_granularity_level", "Granularity index of auto streams (0 = finest)",
                                registry=registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
