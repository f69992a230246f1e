"""A tiny random model behind a real server on loopback. Random weights emit tokens, which is all
these tests need: every comparison is against the same model's offline decode."""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect

from asr.config import MergeConfig, StreamingConfig
from asr.model import Transducer
from asr.recognizer import Recognizer
from asr.tokenizer import train_tokenizer
from server.app import Service
from server.config import EngineConfig, ServerConfig
from tests.conftest import small_config

TEXTS = ["HELLO WORLD", "STREAMING SPEECH RECOGNITION", "ADJACENT TOKEN MERGING", "A QUICK TEST OF THE TOKENIZER"]
CHUNK, LEFT = 4, 16
NO_ENDPOINT = {"silence_after_speech": 0, "silence_without_speech": 0, "max_segment": 0}


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    torch.manual_seed(3)
    tokenizer = train_tokenizer(TEXTS, vocab_size=30)
    merge = MergeConfig(layers=(1,), mode="ratio", granularities=("full", "coarse"), values=(0.0, 0.4),
                        loss_weights=(1.0, 1.0))
    model = Transducer(small_config(vocab_size=tokenizer.vocab_size, merge=merge)).eval()
    return Recognizer(model, tokenizer, streaming=StreamingConfig(chunk_size=CHUNK, left_context=LEFT))


def server_config(**engine) -> ServerConfig:
    base = EngineConfig(chunk_size=CHUNK, left_context=LEFT, max_wait_ms=5, idle_timeout_s=10)
    return ServerConfig(host="127.0.0.1", ws_port=0, grpc_port=-1, max_message_bytes=1 << 20,
                        engine=replace(base, **engine))


@asynccontextmanager
async def running(recognizer: Recognizer, config: ServerConfig | None = None):
    service = Service(recognizer, config or server_config())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def audio(seconds: float = 2.3, seed: int = 0) -> np.ndarray:
    """A chirp plus noise, quantised to 16 bits as a client would send it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return (np.round(x * 32767) / 32768).astype(np.float32)


def s16le(x: np.ndarray) -> bytes:
    return (np.round(x * 32768).clip(-32768, 32767).astype("<i2")).tobytes()


async def stream_file(port: int, x: np.ndarray, piece: int = 3200, **start) -> tuple[list[dict], int | None]:
    """Stream audio as s16le over WebSocket; every server message, and the close code. The
    granularity defaults to full: "auto" would follow the load of the machine running the tests."""
    start.setdefault("granularity", "full")
    messages = []
    async with connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send(json.dumps({"type": "start", "endpoint": NO_ENDPOINT, **start}))
        messages.append(json.loads(await ws.recv()))
        data = s16le(x)
        for offset in range(0, len(data), piece):
            await ws.send(data[offset : offset + piece])
            await asyncio.sleep(0)
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            messages.append(json.loads(message))
        return messages, ws.close_code


def final_text(messages: list[dict]) -> str:
    return " ".join(m["text"] for m in messages if m["type"] == "final").strip()
