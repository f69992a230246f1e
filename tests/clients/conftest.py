"""A real server in a background thread, so clients can run their own event loops against it."""
from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from dataclasses import replace

from server.app import Service
from tests.server.conftest import recognizer, server_config  # noqa: F401  (the shared model fixture)


@contextmanager
def server_thread(recognizer, **engine):
    config = replace(server_config(**engine), grpc_port=0)
    loop = asyncio.new_event_loop()
    service = Service(recognizer, config)
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(service.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield service
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
