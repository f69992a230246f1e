"""WebSocket transport (protocol in docs/websocket.md) plus the HTTP endpoints on the same port:
/healthz, /readyz and Prometheus /metrics. A thin adapter: every decision is the engine's."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server.audio_input import AudioError
from server.engine import CapacityError, Engine
from server.options import OptionsError, parse_options
from server.session import Done, Failed, Final, Partial, Progress, Session

log = logging.getLogger("server.websocket")
WEB = Path(__file__).resolve().parent / "web"
PAGES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/recorder-worklet.js": ("recorder-worklet.js", "text/javascript; charset=utf-8")}

# Close codes (RFC 6455 and IANA registry).
NORMAL, GOING_AWAY, POLICY, INVALID_DATA, TOO_BIG, INTERNAL, TRY_AGAIN_LATER = 1000, 1001, 1008, 1007, 1009, 1011, 1013


def _response(body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache")])
    return Response(HTTPStatus.OK.value, "OK", headers, body)


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, close_code: int = POLICY) -> None:
        super().__init__(message)
        self.code, self.message, self.close_code = code, message, close_code


def event_message(event: Partial | Final | Progress | Done | Failed) -> dict[str, Any] | None:
    if isinstance(event, Partial):
        return {"type": "partial", "segment": event.segment, "text": event.text, "granularity": event.granularity,
                "decoded": round(event.decoded, 3)}
    if isinstance(event, Final):
        return {"type": "final", "segment": event.segment, "text": event.text, "start": round(event.start, 3),
                "end": round(event.end, 3), "words": [{k: round(v, 3) if isinstance(v, float) else v
                                                       for k, v in asdict(w).items()} for w in event.words],
                "tokens": [{"token": t.piece, "start": round(t.start, 3), "end": round(t.end, 3)} for t in event.tokens],
                "granularity": event.granularity, "decoded": round(event.end, 3)}  # a final covers up to its end
    if isinstance(event, Done):
        return {"type": "done", "seconds": round(event.seconds, 3)}
    if isinstance(event, Failed):
        return {"type": "error", "code": event.code, "message": event.message}
    return None  # Progress is for long-form gRPC transcription only


class WebSocketServer:
    def __init__(self, engine: Engine, host: str, port: int, max_message_bytes: int) -> None:
        self.engine = engine
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.server: Server | None = None

    async def start(self) -> int:
        self.server = await serve(self._handle, self.host, self.port, max_size=self.max_message_bytes,
                                  process_request=self._http, ping_interval=20, ping_timeout=20)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("WebSocket and HTTP on ws://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    # ----- HTTP ------------------------------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None  # the WebSocket handshake goes on
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if self.engine.draining:
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
            return connection.respond(HTTPStatus.OK, "ready\n")
        if path == "/metrics":
            return _response(self.engine.metrics.exposition(), "text/plain; version=0.0.4")
        if path == "/api/info":
            info = {"model": self.engine.model_name, "granularities": list(self.engine.granularities),
                    "chunk_ms": round(1000 * self.engine.config.chunk_size * self.engine.frame_seconds)}
            return _response(json.dumps(info).encode(), "application/json")
        if path in PAGES:
            name, kind = PAGES[path]
            return _response((WEB / name).read_bytes(), kind)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: the page is at /, WebSocket clients connect "
                                                         "to /; HTTP has /healthz, /readyz, /metrics, /api/info\n")

    # ----- WebSocket -------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        session: Session | None = None
        sender: asyncio.Task | None = None
        engine = self.engine
        idle = engine.config.idle_timeout_s or None
        try:
            while True:
                try:
                    # Before start only: an open session's idleness is the service's reaper's to judge
                    # (the same rule for both transports); it closes the connection through `sender`.
                    message = await asyncio.wait_for(connection.recv(), idle if session is None else None)
                except TimeoutError:
                    raise ProtocolError("idle_timeout", f"no start message for {idle:g} s", GOING_AWAY) from None
                if isinstance(message, bytes):
                    if session is None:
                        raise ProtocolError("audio_before_start", "binary audio before the start message")
                    await engine.wait_for_room(session)
                    try:
                        engine.feed(session, message)
                    except AudioError as error:
                        raise ProtocolError("bad_audio", str(error), INVALID_DATA) from None
                    except ValueError as error:
                        raise ProtocolError("bad_request", str(error)) from None
                    continue
                request = self._parse(message)
                kind = request["type"]
                if kind == "start":
                    if session is not None:
                        raise ProtocolError("bad_request", "start sent twice: one stream per connection")
                    session = self._start(request)
                    await connection.send(json.dumps({
                        "type": "ready", "session": session.id, "model": engine.model_name,
                        "granularity": session.options.granularity,
                        "granularities": list(engine.granularities),
                        "chunk_ms": round(1000 * engine.config.chunk_size * engine.frame_seconds),
                        "sample_rate": session.options.sample_rate, "encoding": session.options.encoding}))
                    sender = asyncio.create_task(self._send_events(connection, session))
                elif session is None:
                    raise ProtocolError("bad_request", f"{kind!r} before the start message")
                elif kind == "endpoint":
                    engine.request_endpoint(session)
                elif kind == "end":
                    engine.end(session)
                    await sender  # every result, then done, then a normal close
                    return
        except ProtocolError as error:
            engine.metrics.errors.labels(code=error.code).inc()
            log.info("closing %s: %s (%s)", session.id if session else "connection", error.message, error.code)
            await self._send_error(connection, error)
        except ConnectionClosed:
            log.info("client of %s went away", session.id if session else "a connection")
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            if session is not None:
                engine.close(session)

    def _parse(self, message: str) -> dict[str, Any]:
        try:
            request = json.loads(message)
        except json.JSONDecodeError as error:
            raise ProtocolError("bad_request", f"text messages must be JSON: {error}") from None
        if not isinstance(request, dict) or not isinstance(request.get("type"), str):
            raise ProtocolError("bad_request", 'a text message is a JSON object with a "type"')
        if request["type"] not in ("start", "endpoint", "end"):
            raise ProtocolError("bad_request", f"unknown message type {request['type']!r}; "
                                               "valid: start, endpoint, end")
        if request["type"] != "start" and len(request) > 1:
            raise ProtocolError("bad_request", f"unknown field(s) {sorted(set(request) - {'type'})} "
                                               f"in {request['type']!r}")
        return request

    def _start(self, request: dict[str, Any]) -> Session:
        try:
            options = parse_options(request, self.engine.granularities)
        except OptionsError as error:
            raise ProtocolError("bad_options", str(error)) from None
        try:
            return self.engine.open(options)
        except CapacityError as error:
            raise ProtocolError("unavailable", str(error), TRY_AGAIN_LATER) from None

    async def _send_events(self, connection: ServerConnection, session: Session) -> None:
        """Results to the client until Done or Failed. A client gone mid-send ends this task quietly:
        the handler's receive loop sees the same closure and frees the session, and an exception
        left in this task would only be logged by asyncio as never retrieved."""
        try:
            while True:
                event = await session.events.get()
                message = event_message(event)
                if message is not None:
                    await connection.send(json.dumps(message))
                if isinstance(event, Failed):
                    await connection.close(GOING_AWAY if event.code == "idle_timeout" else INTERNAL,
                                           event.message[:120])
                    return
                if isinstance(event, Done):
                    await connection.close(NORMAL, "done")
                    return
        except ConnectionClosed:
            log.info("client of %s went away before its results were sent", session.id)

    @staticmethod
    async def _send_error(connection: ServerConnection, error: ProtocolError) -> None:
        try:
            await connection.send(json.dumps({"type": "error", "code": error.code, "message": error.message}))
            await connection.close(error.close_code, error.message[:120])
        except ConnectionClosed:
            pass
