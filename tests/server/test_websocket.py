"""The WebSocket transport on loopback: streamed results equal the offline decode, clients are
independent, a vanished client frees its session, and bad input gets an error naming it."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from server.options import StreamOptions
from server.session import Partial

from tests.server.conftest import audio, final_text, running, s16le, server_config, stream_file


@pytest.mark.parametrize("granularity", ["full", "coarse"])
def test_streamed_final_equals_offline_decode(recognizer, granularity):
    x = audio()

    async def scenario():
        async with running(recognizer) as service:
            return await stream_file(service.websocket.port, x, granularity=granularity)

    messages, close_code = asyncio.run(scenario())
    offline = recognizer.transcribe(x, 16000, full_context=False, granularity=granularity)
    assert offline.text, "the random model emits tokens; otherwise the comparison proves nothing"
    assert messages[0]["type"] == "ready" and messages[0]["granularities"] == ["full", "coarse"]
    assert final_text(messages) == offline.text
    assert [m["type"] for m in messages[-1:]] == ["done"] and close_code == 1000
    finals = [m for m in messages if m["type"] == "final"]
    assert all(m["granularity"] == granularity for m in finals)
    words = [w for m in finals for w in m["words"]]
    assert " ".join(w["word"] for w in words) == offline.text
    assert all(0 <= w["start"] <= w["end"] <= len(x) / 16000 + 0.1 for w in words)
    tokens = [t for m in finals for t in m["tokens"]]
    assert [t["token"] for t in tokens] == [t.piece for t in offline.tokens]
    assert [t["start"] for t in tokens] == sorted(t["start"] for t in tokens)
    partials = [m["text"] for m in messages if m["type"] == "partial"]
    assert partials and offline.text.startswith(partials[0])


def test_several_clients_at_once_get_their_own_results_in_shared_batches(recognizer):
    clips = [audio(1.5 + 0.4 * i, seed=i) for i in range(4)]
    granularities = ["full", "coarse", "coarse", "full"]

    async def scenario():
        async with running(recognizer, server_config(max_wait_ms=30)) as service:
            results = await asyncio.gather(*(stream_file(service.websocket.port, x, granularity=g)
                                             for x, g in zip(clips, granularities)))
            batches = service.engine.metrics.batch_size.collect()[0].samples
            return results, batches

    results, samples = asyncio.run(scenario())
    for (messages, code), x, g in zip(results, clips, granularities):
        assert code == 1000
        assert final_text(messages) == recognizer.transcribe(x, 16000, full_context=False, granularity=g).text
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    assert total / count > 1.5, "streams were never batched together"


def test_a_client_that_vanishes_frees_its_session(recognizer):
    async def scenario():
        async with running(recognizer) as service:
            ws = await connect(f"ws://127.0.0.1:{service.websocket.port}/")
            await ws.send(json.dumps({"type": "start"}))
            await ws.recv()
            await ws.send(s16le(audio(1.0)))
            assert len(service.engine.sessions) == 1
            ws.transport.abort()  # no close handshake: the client just disappears
            for _ in range(100):
                if not service.engine.sessions:
                    break
                await asyncio.sleep(0.02)
            return len(service.engine.sessions), service.engine.metrics.active_sessions._value.get()

    assert asyncio.run(scenario()) == (0, 0)


def test_results_for_a_client_gone_mid_send_end_the_sender_quietly(recognizer, caplog):
    """The sender task must not end with an exception nobody retrieves (asyncio logs those as errors)."""
    class GoneConnection:
        async def send(self, message):
            raise ConnectionClosedError(None, None)

        async def close(self, *args):
            raise AssertionError("a gone client is not closed again")

    async def scenario():
        async with running(recognizer) as service:
            session = service.engine.open(StreamOptions())
            session.events.put_nowait(Partial(0, "hello", "full", 0.32))
            try:
                await asyncio.wait_for(service.websocket._send_events(GoneConnection(), session), 5)
            finally:
                service.engine.close(session)
            return session.id

    with caplog.at_level(logging.INFO, logger="server.websocket"):
        session_id = asyncio.run(scenario())
    assert f"client of {session_id} went away before its results were sent" in caplog.text


async def drain(ws) -> list[dict]:
    """Every message until the server closes, whatever the close code."""
    replies = []
    try:
        async for message in ws:
            replies.append(json.loads(message))
    except ConnectionClosed:
        pass
    return replies


BAD_INPUTS = [
    ("binary before start", [b"\x00\x01"], "audio_before_start", 1008),
    ("not json", ["hello"], "bad_request", 1008),
    ("unknown type", ['{"type": "pause"}'], "bad_request", 1008),
    ("unknown field", ['{"type": "start", "language": "en"}'], "bad_options", 1008),
    ("sample rate 0", ['{"type": "start", "sample_rate": 0}'], "bad_options", 1008),
    ("sample rate 10 MHz", ['{"type": "start", "sample_rate": 10000000}'], "bad_options", 1008),
    ("unknown granularity", ['{"type": "start", "granularity": "huge"}'], "bad_options", 1008),
    ("odd s16le bytes", ['{"type": "start"}', b"\x00\x01\x02"], "bad_audio", 1007),
    ("NaN floats", ['{"type": "start", "encoding": "f32le"}', np.array([0.1, math.nan], "<f4").tobytes()],
     "bad_audio", 1007),
    ("start twice", ['{"type": "start"}', '{"type": "start"}'], "bad_request", 1008),
    ("end before start", ['{"type": "end"}'], "bad_request", 1008),
]


@pytest.mark.parametrize("name, sends, code, close_code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_an_error_naming_it_and_other_streams_go_on(recognizer, name, sends, code, close_code):
    x = audio(1.5)

    async def bad_client(port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            for item in sends:
                await ws.send(item)
            return await drain(ws), ws.close_code

    async def scenario():
        async with running(recognizer) as service:
            port = service.websocket.port
            good, bad = await asyncio.gather(stream_file(port, x), bad_client(port))
            await asyncio.sleep(0.05)
            return good, bad, len(service.engine.sessions)

    (good_messages, good_code), (replies, bad_code), open_sessions = asyncio.run(scenario())
    errors = [r for r in replies if r["type"] == "error"]
    assert errors and errors[-1]["code"] == code and errors[-1]["message"]
    assert bad_code == close_code
    assert final_text(good_messages) == recognizer.transcribe(x, 16000, full_context=False).text
    assert good_code == 1000 and open_sessions == 0


def test_a_message_over_the_size_limit_closes_with_1009(recognizer):
    async def scenario():
        async with running(recognizer) as service:
            async with connect(f"ws://127.0.0.1:{service.websocket.port}/", max_size=None) as ws:
                await ws.send(json.dumps({"type": "start"}))
                await ws.recv()
                await ws.send(b"\x00" * (2 << 20))  # 2 MB; the test server takes 1 MB
                await drain(ws)
                await asyncio.sleep(0.05)
                return ws.close_code, len(service.engine.sessions)

    assert asyncio.run(scenario()) == (1009, 0)


def test_at_capacity_a_new_stream_is_refused_with_1013(recognizer):
    async def scenario():
        async with running(recognizer, server_config(max_sessions=1)) as service:
            port = service.websocket.port
            async with connect(f"ws://127.0.0.1:{port}/") as first:
                await first.send(json.dumps({"type": "start"}))
                await first.recv()
                async with connect(f"ws://127.0.0.1:{port}/") as second:
                    await second.send(json.dumps({"type": "start"}))
                    replies = await drain(second)
                    return replies[0], second.close_code

    reply, code = asyncio.run(scenario())
    assert reply["type"] == "error" and reply["code"] == "unavailable" and "capacity" in reply["message"]
    assert code == 1013


def test_forced_endpoint_starts_a_new_segment(recognizer):
    x = audio(2.0)

    async def scenario():
        async with running(recognizer) as service:
            async with connect(f"ws://127.0.0.1:{service.websocket.port}/") as ws:
                await ws.send(json.dumps({"type": "start", "endpoint": {"silence_after_speech": 0,
                                                                        "silence_without_speech": 0,
                                                                        "max_segment": 0}}))
                await ws.recv()
                data = s16le(x)
                await ws.send(data[: len(data) // 2])
                await ws.send(json.dumps({"type": "endpoint"}))
                await ws.send(data[len(data) // 2 :])
                await ws.send(json.dumps({"type": "end"}))
                return [json.loads(m) async for m in ws]

    finals = [m for m in asyncio.run(scenario()) if m["type"] == "final"]
    assert [m["segment"] for m in finals] == [0, 1]
    assert finals[0]["end"] <= finals[1]["start"] + 0.2


def test_resampled_client_rates_are_decoded(recognizer):
    from scipy.signal import resample_poly

    x = audio(2.0)
    x8k = resample_poly(x, 1, 2).astype(np.float32)

    async def scenario():
        async with running(recognizer) as service:
            return await stream_file(service.websocket.port, x8k, sample_rate=8000)

    messages, code = asyncio.run(scenario())
    assert code == 1000 and messages[-1]["type"] == "done"
    assert abs(messages[-1]["seconds"] - 2.0) < 0.1  # 2 s at 8 kHz is still 2 s of audio


def test_health_readiness_and_metrics_over_http(recognizer):
    def get(url):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    async def scenario():
        async with running(recognizer) as service:
            base = f"http://127.0.0.1:{service.websocket.port}"
            await stream_file(service.websocket.port, audio(1.0))
            results = [await asyncio.to_thread(get, base + p) for p in ("/healthz", "/readyz", "/metrics", "/nope")]
            service.engine.draining = True
            results.append(await asyncio.to_thread(get, base + "/readyz"))
            return results

    health, ready, metrics, missing, draining = asyncio.run(scenario())
    assert health == (200, "ok\n") and ready[0] == 200 and draining[0] == 503
    assert metrics[0] == 200 and "asr_active_sessions 0.0" in metrics[1]
    assert "asr_sessions_opened_total 1.0" in metrics[1] and "asr_partial_latency_seconds_bucket" in metrics[1]
    assert 'asr_stream_step_seconds{batch="1",granularity="full"}' in metrics[1]  # what auto granularity compares
    assert missing[0] == 404


def test_an_idle_stream_is_closed_with_an_error_saying_so(recognizer):
    async def scenario():
        async with running(recognizer, server_config(idle_timeout_s=0.3)) as service:
            async with connect(f"ws://127.0.0.1:{service.websocket.port}/") as ws:
                await ws.send(json.dumps({"type": "start"}))
                await ws.recv()
                await ws.send(s16le(audio(0.5)))  # then nothing
                replies = await asyncio.wait_for(drain(ws), 5)
                return replies, ws.close_code, len(service.engine.sessions)

    replies, code, open_sessions = asyncio.run(scenario())
    assert replies[-1]["type"] == "error" and replies[-1]["code"] == "idle_timeout"
    assert code == 1001 and open_sessions == 0
