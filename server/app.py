"""Build and run the service: one engine, the WebSocket/HTTP transport and the gRPC transport."""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import torch

from asr.checkpoint import load_checkpoint
from asr.config import StreamingConfig
from asr.recognizer import Recognizer
from server.config import DEFAULT_MODEL, ServerConfig
from server.engine import Engine

log = logging.getLogger("server")


def load_recognizer(model: str, device: str, config: ServerConfig | None = None) -> Recognizer:
    path = Path(DEFAULT_MODEL if model == "default" else model)
    if not path.is_file():
        hint = (" (train one with `python -m recipes.synthetic.run`, or `make demo` for a quick one)"
                if model == "default" else "")
        raise SystemExit(f"no model at {path}{hint}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    ckpt = load_checkpoint(path, device)
    engine = (config or ServerConfig()).engine
    return Recognizer(ckpt.model, ckpt.tokenizer,
                      streaming=StreamingConfig(chunk_size=engine.chunk_size, left_context=engine.left_context))


class Service:
    """The engine plus its transports, started and drained together."""

    def __init__(self, recognizer: Recognizer, config: ServerConfig) -> None:
        from server.websocket import WebSocketServer

        self.config = config
        self.engine = Engine(recognizer, config.engine, model_name=config.model)
        self.websocket = WebSocketServer(self.engine, config.host, config.ws_port, config.max_message_bytes) \
            if config.ws_port >= 0 else None
        self.grpc = None
        self._reaper: asyncio.Task | None = None

    async def start(self) -> None:
        await self.engine.start()
        if self.websocket is not None:
            await self.websocket.start()
        if self.config.grpc_port >= 0:
            from server.grpc_server import GrpcServer

            self.grpc = GrpcServer(self.engine, self.config.host, self.config.grpc_port,
                                   self.config.max_message_bytes)
            await self.grpc.start()
        self._reaper = asyncio.create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        """Close sessions whose client stopped sending (its transport notices and says why)."""
        from server.session import Failed

        while True:
            await asyncio.sleep(min(1.0, self.config.engine.idle_timeout_s or 1.0))
            for session in self.engine.idle_sessions(time.monotonic()):
                log.info("session %s idle for over %.0f s: closing", session.id, self.config.engine.idle_timeout_s)
                session.events.put_nowait(Failed("idle_timeout",
                                                 f"no audio for {self.config.engine.idle_timeout_s:g} s"))
                self.engine.close(session)

    async def drain(self) -> None:
        """Refuse new streams, let open ones finish (up to drain_timeout_s), then stop."""
        self.engine.draining = True
        if self.grpc is not None:
            await self.grpc.set_serving(False)
        deadline = time.monotonic() + self.config.drain_timeout_s
        log.info("draining: %d open stream(s)", len(self.engine.sessions))
        while self.engine.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await self.stop()

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self.websocket is not None:
            await self.websocket.stop()
        if self.grpc is not None:
            await self.grpc.stop()
        await self.engine.stop()


async def serve_forever(recognizer: Recognizer, config: ServerConfig) -> None:
    service = Service(recognizer, config)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving %s on %s (granularities %s); SIGTERM drains", config.model, config.device,
             ", ".join(service.engine.granularities))
    await stop.wait()
    await service.drain()
    log.info("stopped")
