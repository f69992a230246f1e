"""Every server setting, typed, with its default and a one-line explanation; `python -m server
--help` is generated from these fields, so the flags, defaults and help never drift apart."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EngineConfig:
    chunk_size: int = 8  # encoder frames per streaming chunk (40 ms each: 8 = 320 ms)
    left_context: int = 64  # encoder frames of attention cache per stream (64 = 2.56 s); bounds memory per stream
    max_batch: int = 32  # most chunks (streams) encoded together in one step
    max_wait_ms: float = 10.0  # how long the scheduler waits for more ready chunks before running a batch
    max_sessions: int = 64  # concurrent streams; more are refused (gRPC RESOURCE_EXHAUSTED, WebSocket 1013)
    max_pending_chunks: int = 32  # chunks a stream may have waiting; a client sending faster is read more slowly
    max_stream_seconds: float = 4 * 3600.0  # longest audio one stream may send (0 = no limit)
    idle_timeout_s: float = 30.0  # a stream that sends nothing this long is closed (0 = never)
    latency_target_ms: float = 400.0  # auto granularity: partial-result latency to stay under
    auto_interval_s: float = 1.0  # auto granularity: at most one change per interval
    auto_min_gain: float = 0.1  # auto granularity: skip a level not at least this fraction cheaper per stream than a finer one
    beam: int = 4  # beam size of decoding=beam

    def __post_init__(self) -> None:
        at_least = dict(chunk_size=1, left_context=0, max_batch=1, max_wait_ms=0, max_sessions=0, max_pending_chunks=1,
                        max_stream_seconds=0, idle_timeout_s=0, auto_interval_s=0, auto_min_gain=0, beam=1)
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        if not self.latency_target_ms > 0:
            raise ValueError(f"--latency-target-ms must be above 0, got {self.latency_target_ms}")
        if not self.auto_min_gain < 1:
            raise ValueError(f"--auto-min-gain is a fraction of a level's cost, below 1; got {self.auto_min_gain}")


@dataclass(frozen=True)
class ServerConfig:
    model: str = "default"  # serving checkpoint (.pt from a recipe); "default" = exp/synthetic-cpu-small/final.pt
    device: str = "cpu"  # cpu or cuda
    host: str = "127.0.0.1"  # interface to listen on (0.0.0.0 for every interface)
    grpc_port: int = 50051  # gRPC port (-1 = no gRPC server; 0 = any free port)
    ws_port: int = 8080  # WebSocket + HTTP (/healthz, /readyz, /metrics) port (-1 = none; 0 = any free port)
    max_message_bytes: int = 4 * 1024 * 1024  # largest WebSocket/gRPC message accepted
    drain_timeout_s: float = 30.0  # on SIGTERM: how long open streams may take to finish
    log_level: str = "INFO"  # DEBUG, INFO, WARNING or ERROR
    engine: EngineConfig = field(default_factory=EngineConfig)


DEFAULT_MODEL = "exp/synthetic-cpu-small/final.pt"


def _fields_with_help(cls: type) -> list[tuple[dataclasses.Field, str]]:
    """(field, its trailing comment) from the class source: the comment is the help text."""
    import inspect

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and not stripped.startswith("#"):
            comments[stripped.split(":", 1)[0]] = stripped.split("#", 1)[1].strip()
    return [(f, comments.get(f.name, "")) for f in dataclasses.fields(cls)]


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls, title in ((ServerConfig, "server"), (EngineConfig, "engine (batching, limits)")):
        group = parser.add_argument_group(title)
        for f, text in _fields_with_help(cls):
            if f.default is dataclasses.MISSING:  # ServerConfig.engine: its fields come as their own group
                continue
            group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
                               help=f"{text} (default: {f.default})")
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    values: dict[str, Any] = vars(args)
    engine = EngineConfig(**{f.name: values[f.name] for f in dataclasses.fields(EngineConfig)})
    server = {f.name: values[f.name] for f in dataclasses.fields(ServerConfig) if f.name != "engine"}
    return ServerConfig(**server, engine=engine)
