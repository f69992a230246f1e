"""`python -m server` as a real process: it says where it listens, serves, and on SIGTERM refuses
new streams, lets the open one finish, then exits 0. A missing model is one clear line."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time

from websockets.asyncio.client import connect

from asr.checkpoint import save_checkpoint
from tests.server.conftest import CHUNK, LEFT, NO_ENDPOINT, audio, s16le


def _start(checkpoint) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--model", str(checkpoint), "--ws-port", "0", "--grpc-port", "0",
         "--chunk-size", str(CHUNK), "--left-context", str(LEFT), "--drain-timeout-s", "20"],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        if found:
            return process, int(found.group(1))
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"server did not start: {process.stderr.read()}")


def test_sigterm_drains_open_streams_then_exits(tmp_path, recognizer):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, recognizer.model, recognizer.tokenizer)
    process, port = _start(checkpoint)
    x = s16le(audio(2.0))

    async def scenario():
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send(json.dumps({"type": "start", "granularity": "full", "endpoint": NO_ENDPOINT}))
            await ws.recv()
            await ws.send(x[: len(x) // 2])
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with connect(f"ws://127.0.0.1:{port}/") as late:  # draining: refused
                await late.send(json.dumps({"type": "start"}))
                refusal = json.loads(await late.recv())
            await ws.send(x[len(x) // 2 :])
            await ws.send(json.dumps({"type": "end"}))
            messages = [json.loads(m) async for m in ws]
            return refusal, messages

    refusal, messages = asyncio.run(scenario())
    assert refusal["type"] == "error" and refusal["code"] == "unavailable" and "shutting down" in refusal["message"]
    assert messages[-1]["type"] == "done"
    expected = recognizer.transcribe(audio(2.0), 16000, full_context=False, granularity="full").text
    assert " ".join(m["text"] for m in messages if m["type"] == "final") == expected
    assert process.wait(timeout=30) == 0


def test_missing_model_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "server", "--model", str(tmp_path / "none.pt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no model at" in result.stderr and "Traceback" not in result.stderr


def test_help_explains_every_flag():
    result = subprocess.run([sys.executable, "-m", "server", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--model", "--grpc-port", "--ws-port", "--device", "--max-batch", "--max-sessions",
                 "--latency-target-ms", "--idle-timeout-s"):
        assert re.search(rf"{flag} \S+\s+\S", result.stdout), flag


def test_an_out_of_range_setting_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "server", "--auto-min-gain", "1.5"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--auto-min-gain" in result.stderr and "Traceback" not in result.stderr
