"""The gRPC transport on loopback: StreamingRecognize equals the offline decode, Transcribe streams
segments with progress for a file sent faster than real time, bad requests get INVALID_ARGUMENT,
a full server RESOURCE_EXHAUSTED, and a cancelled call frees its session."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.generate import ensure_stubs
from tests.server.conftest import audio, running, s16le, server_config

pb2, pb2_grpc = ensure_stubs()
NO_ENDPOINT = pb2.EndpointConfig(silence_after_speech=0, silence_without_speech=0, max_segment=0)


def grpc_config(**engine):
    return server_config(**engine).__class__(**{**server_config(**engine).__dict__, "grpc_port": 0})


def requests(x: np.ndarray, piece: int = 6400, **config):
    config.setdefault("endpoint", NO_ENDPOINT)
    yield pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig(**config))
    data = s16le(x)
    for offset in range(0, len(data), piece):
        yield pb2.StreamingRecognizeRequest(audio=data[offset : offset + piece])


async def call(service, method: str, messages):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
        stub = pb2_grpc.RecognizerStub(channel)
        return [r async for r in getattr(stub, method)(messages)]


def test_streaming_recognize_equals_offline_decode(recognizer):
    x = audio()

    async def scenario():
        async with running(recognizer, grpc_config()) as service:
            return await call(service, "StreamingRecognize",
                              requests(x, granularity="coarse", interim_results=True, timestamps=True))

    responses = asyncio.run(scenario())
    assert responses[0].WhichOneof("response") == "ready" and list(responses[0].ready.granularities) == ["full", "coarse"]
    results = [r.result for r in responses[1:]]
    finals = [r for r in results if r.is_final]
    offline = recognizer.transcribe(x, 16000, full_context=False, granularity="coarse")
    assert offline.text and " ".join(f.text for f in finals) == offline.text
    assert any(not r.is_final for r in results), "interim results were asked for"
    assert all(f.granularity == "coarse" for f in finals)
    assert " ".join(w.word for f in finals for w in f.words) == offline.text
    assert [t.piece for f in finals for t in f.tokens] == [t.piece for t in offline.tokens]


def test_transcribe_streams_segments_and_progress_for_a_file_sent_at_once(recognizer):
    x = audio(8.0)

    async def scenario():
        async with running(recognizer, grpc_config(max_pending_chunks=2)) as service:
            endpoint = pb2.EndpointConfig(silence_after_speech=0, silence_without_speech=0, max_segment=2.0)
            return await call(service, "Transcribe", requests(x, piece=64000, endpoint=endpoint, granularity="full"))

    responses = asyncio.run(scenario())
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[0] == "ready" and responses[0].ready.model
    segments = [r.segment for r in responses if r.WhichOneof("response") == "segment"]
    progress = [r.progress_seconds for r in responses if r.WhichOneof("response") == "progress_seconds"]
    assert kinds[-1] == "done_seconds" and abs(responses[-1].done_seconds - 8.0) < 0.1
    assert len(segments) >= 3 and [s.segment for s in segments] == list(range(len(segments)))
    assert all(s.is_final and s.end - s.start <= 2.2 for s in segments)
    assert all(a.end <= b.start + 0.05 for a, b in zip(segments, segments[1:]))
    assert progress == sorted(progress) and progress[-1] <= 8.0 + 0.1


def _bad(name):
    x = s16le(audio(0.5))
    cases = {
        "audio first": [pb2.StreamingRecognizeRequest(audio=x)],
        "sample rate 10 MHz": [pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig(sample_rate=10_000_000))],
        "unknown granularity": [pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig(granularity="huge"))],
        "odd s16le bytes": [pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig()),
                            pb2.StreamingRecognizeRequest(audio=b"\x00\x01\x02")],
        "NaN floats": [pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig(encoding="f32le")),
                       pb2.StreamingRecognizeRequest(audio=np.array([np.nan], "<f4").tobytes())],
        "config twice": [pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig())] * 2,
        "empty stream": [],
    }
    return cases[name]


@pytest.mark.parametrize("name", ["audio first", "sample rate 10 MHz", "unknown granularity", "odd s16le bytes",
                                  "NaN floats", "config twice", "empty stream"])
def test_bad_requests_get_invalid_argument_naming_the_problem(recognizer, name):
    async def scenario():
        async with running(recognizer, grpc_config()) as service:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(service, "StreamingRecognize", iter(_bad(name)))
            await asyncio.sleep(0.05)
            return error.value, len(service.engine.sessions)

    error, open_sessions = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details()
    assert open_sessions == 0


def test_full_server_and_oversize_messages_get_resource_exhausted(recognizer):
    async def scenario():
        async with running(recognizer, grpc_config(max_sessions=1)) as service:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
                stub = pb2_grpc.RecognizerStub(channel)
                queue: asyncio.Queue = asyncio.Queue()
                await queue.put(pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig()))

                async def held():
                    while True:
                        yield await queue.get()

                first = stub.StreamingRecognize(held())
                await first.read()  # ready: the one session is taken
                with pytest.raises(grpc.aio.AioRpcError) as full:
                    await call(service, "StreamingRecognize",
                               iter([pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig())]))
                first.cancel()
                await asyncio.sleep(0.1)
                big = [pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig()),
                       pb2.StreamingRecognizeRequest(audio=b"\x00" * (2 << 20))]
                with pytest.raises(grpc.aio.AioRpcError) as oversize:
                    await call(service, "StreamingRecognize", iter(big))
                await asyncio.sleep(0.1)
                return full.value, oversize.value, len(service.engine.sessions)

    full, oversize, open_sessions = asyncio.run(scenario())
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "capacity" in full.details()
    assert oversize.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert open_sessions == 0


def test_health_check_serves(recognizer):
    async def scenario():
        async with running(recognizer, grpc_config()) as service:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                return [(await stub.Check(health_pb2.HealthCheckRequest(service=s))).status
                        for s in ("", "asr.v1.Recognizer")]

    assert asyncio.run(scenario()) == [health_pb2.HealthCheckResponse.SERVING] * 2


def test_an_idle_call_ends_with_deadline_exceeded(recognizer):
    async def scenario():
        async with running(recognizer, grpc_config(idle_timeout_s=0.3)) as service:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
                stub = pb2_grpc.RecognizerStub(channel)
                never = asyncio.Event()

                async def silent():
                    yield pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig())
                    await never.wait()  # the client keeps the call open and sends nothing

                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await asyncio.wait_for(_collect(stub.StreamingRecognize(silent())), 5)
                await asyncio.sleep(0.05)
                return error.value, len(service.engine.sessions)

    error, open_sessions = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no audio" in error.details()
    assert open_sessions == 0


async def _collect(call):
    return [r async for r in call]
