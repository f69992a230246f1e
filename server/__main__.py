"""Streaming speech recognition server: gRPC and WebSocket over one batching engine.

    python -m server --model exp/synthetic-cpu-small/final.pt --ws-port 8080 --grpc-port 50051

WebSocket clients connect to ws://HOST:WS_PORT/ (protocol: docs/websocket.md); the same port
answers HTTP GET /healthz, /readyz and /metrics (Prometheus). gRPC serves asr.v1.Recognizer
(proto/asr/v1/recognizer.proto) and grpc.health.v1. SIGTERM drains: no new streams, open ones
finish, then the process exits.
"""
from __future__ import annotations

import asyncio
import logging
import sys

from server.app import load_recognizer, serve_forever
from server.config import build_parser, config_from_args


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recognizer = load_recognizer(config.model, config.device, config)
    asyncio.run(serve_forever(recognizer, config))


if __name__ == "__main__":
    sys.exit(main())
