"""gRPC transport: asr.v1.Recognizer (StreamingRecognize, Transcribe) and grpc.health.v1 over
the same engine as the WebSocket. A thin adapter: requests become engine calls, engine events
become responses, engine errors become status codes."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from proto.generate import ensure_stubs
from server.audio_input import AudioError
from server.engine import CapacityError, Engine
from server.options import OptionsError, parse_options
from server.session import Done, Failed, Final, Partial, Progress, Session

pb2, pb2_grpc = ensure_stubs()
log = logging.getLogger("server.grpc")

STATUS = {"bad_audio": grpc.StatusCode.INVALID_ARGUMENT, "bad_request": grpc.StatusCode.INVALID_ARGUMENT,
          "bad_options": grpc.StatusCode.INVALID_ARGUMENT, "unavailable": grpc.StatusCode.RESOURCE_EXHAUSTED,
          "idle_timeout": grpc.StatusCode.DEADLINE_EXCEEDED, "internal": grpc.StatusCode.INTERNAL}
SERVICE = "asr.v1.Recognizer"


def config_to_options(config, granularities):
    """The proto RecognitionConfig as the same JSON-like mapping the WebSocket start message is,
    so both transports share parse_options and its errors. Proto3 defaults mean "unset"."""
    message = {"sample_rate": config.sample_rate or 16000, "encoding": config.encoding or "s16le",
               "granularity": config.granularity or "auto", "interim_results": config.interim_results,
               "decoding": config.decoding or "greedy", "timestamps": config.timestamps}
    if config.HasField("endpoint"):
        message["endpoint"] = {f.name: value for f, value in config.endpoint.ListFields()}
    return parse_options(message, granularities)


def result_message(event: Partial | Final):
    if isinstance(event, Partial):
        return pb2.Result(is_final=False, segment=event.segment, text=event.text, granularity=event.granularity,
                          decoded_seconds=event.decoded)
    return pb2.Result(is_final=True, segment=event.segment, text=event.text, start=event.start, end=event.end,
                      words=[pb2.Word(word=w.word, start=w.start, end=w.end) for w in event.words],
                      granularity=event.granularity, decoded_seconds=event.end,
                      tokens=[pb2.Token(piece=t.piece, start=t.start, end=t.end) for t in event.tokens])


class RecognizerService(pb2_grpc.RecognizerServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def StreamingRecognize(self, requests: AsyncIterator, context) -> AsyncIterator:
        session = await self._open(requests, context, interim=None)
        yield pb2.StreamingRecognizeResponse(ready=self._ready(session))
        async for event in self._events(requests, session, context):
            if isinstance(event, (Partial, Final)):
                yield pb2.StreamingRecognizeResponse(result=result_message(event))

    async def Transcribe(self, requests: AsyncIterator, context) -> AsyncIterator:
        session = await self._open(requests, context, interim=False)
        yield pb2.TranscribeResponse(ready=self._ready(session))
        async for event in self._events(requests, session, context):
            if isinstance(event, Final):
                yield pb2.TranscribeResponse(segment=result_message(event))
            elif isinstance(event, Progress):
                yield pb2.TranscribeResponse(progress_seconds=event.seconds)
            elif isinstance(event, Done):
                yield pb2.TranscribeResponse(done_seconds=event.seconds)

    def _ready(self, session: Session):
        engine = self.engine
        return pb2.Ready(session=session.id, granularities=list(engine.granularities), model=engine.model_name,
                         chunk_ms=round(1000 * engine.config.chunk_size * engine.frame_seconds))

    async def _open(self, requests: AsyncIterator, context, interim: bool | None) -> Session:
        try:
            first = await anext(aiter(requests))
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no RecognitionConfig: the stream was empty")
        if first.WhichOneof("request") != "config":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the first message must be a RecognitionConfig, not audio")
        try:
            options = config_to_options(first.config, self.engine.granularities)
            if interim is not None:
                from dataclasses import replace

                options = replace(options, interim_results=interim)
            return self.engine.open(options)
        except OptionsError as error:
            self.engine.metrics.errors.labels(code="bad_options").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except CapacityError as error:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))

    async def _events(self, requests: AsyncIterator, session: Session, context) -> AsyncIterator:
        """The session's events until Done; a reader task feeds the engine meanwhile. Errors abort
        the RPC with a status; a cancelled RPC (client gone) closes the session."""
        reader = asyncio.create_task(self._read(requests, session))
        try:
            while True:
                event = await session.events.get()
                if isinstance(event, Failed):
                    self.engine.metrics.errors.labels(code=event.code).inc()
                    await context.abort(STATUS.get(event.code, grpc.StatusCode.UNKNOWN), event.message)
                yield event
                if isinstance(event, Done):
                    return
        finally:
            reader.cancel()
            self.engine.close(session)

    async def _read(self, requests: AsyncIterator, session: Session) -> None:
        engine = self.engine
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "audio":
                    await engine.wait_for_room(session)
                    engine.feed(session, request.audio)
                elif kind == "endpoint":
                    engine.request_endpoint(session)
                elif kind == "config":
                    raise ValueError("RecognitionConfig sent twice: it comes first and once")
                else:
                    raise ValueError("an empty request: set config, audio or endpoint")
            engine.end(session)  # the client half-closed: its audio is over
        except AudioError as error:
            session.events.put_nowait(Failed("bad_audio", str(error)))
        except ValueError as error:
            session.events.put_nowait(Failed("bad_request", str(error)))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the client's stream broke; the RPC is ending anyway
            log.info("session %s: request stream ended: %s", session.id, error)


class GrpcServer:
    def __init__(self, engine: Engine, host: str, port: int, max_message_bytes: int) -> None:
        self.engine = engine
        self.host, self.port = host, port
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                               ("grpc.max_send_message_length", max_message_bytes)])
        pb2_grpc.add_RecognizerServicer_to_server(RecognizerService(engine), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        await self.server.start()
        await self.set_serving(True)
        log.info("gRPC on %s:%d", self.host, self.port)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def stop(self, grace: float = 1.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)
