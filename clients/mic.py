"""Live transcription from the microphone (or a WAV file at real-time pace) over WebSocket.

    python -m clients.mic --url ws://127.0.0.1:8080/                 # speak; Ctrl-C to stop
    python -m clients.mic --url ws://127.0.0.1:8080/ --wav talk.wav  # a file, paced like a microphone

Partial results update in place on one line; each final result is printed as a line with its
segment times. --json prints the server's events as they arrive instead.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

PIECE_SECONDS = 0.1


class MicError(RuntimeError):
    pass


async def wav_source(audio, queue: asyncio.Queue) -> None:
    """Put an AudioFile's audio (mono float32) on the queue in 100 ms pieces at real-time pace."""
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    piece = int(audio.sample_rate * PIECE_SECONDS)
    for block in audio.blocks():
        for offset in range(0, block.size, piece):
            await asyncio.sleep(max(0.0, start + sent / audio.sample_rate - loop.time()))
            data = block[offset : offset + piece]
            await queue.put(data)
            sent += data.size
    await queue.put(None)


def check_microphone():
    """sounddevice, once it is known that there is a microphone to open; else a MicError saying what to do."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as error:
        raise MicError(f"no audio input available: {error} (install PortAudio: apt-get install libportaudio2), "
                       "or use --wav FILE") from None
    try:
        sd.query_devices(kind="input")
    except Exception as error:
        raise MicError(f"no microphone found ({error}); use --wav FILE to stream a file") from None
    return sd


async def mic_source(queue: asyncio.Queue, rate: int, stop: asyncio.Event) -> None:
    sd = check_microphone()
    loop = asyncio.get_running_loop()

    def callback(indata, frames, time_info, status):
        loop.call_soon_threadsafe(queue.put_nowait, indata[:, 0].copy())

    try:
        stream = sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=int(rate * PIECE_SECONDS),
                                callback=callback)
    except Exception as error:  # PortAudioError and friends: no device, busy device, ...
        await queue.put(None)  # end the stream; run() reports this error once the server is done
        raise MicError(f"cannot open a microphone: {error}; use --wav FILE to stream a file") from None
    with stream:
        print("listening: speak now, Ctrl-C to stop", file=sys.stderr)
        await stop.wait()
    await queue.put(None)


def show(event: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
        return
    kind = event["type"]
    if kind == "partial":
        print(f"\r\033[K[{event['segment']}] {event['text']}", end="", flush=True)
    elif kind == "final":
        print(f"\r\033[K[{_clock(event['start'])} - {_clock(event['end'])}] {event['text']}", flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


async def run(args: argparse.Namespace) -> int:
    queue: asyncio.Queue = asyncio.Queue()
    stop = asyncio.Event()
    # Check the audio source first, so a missing file or microphone is reported before connecting.
    if args.wav:
        from clients.audio_files import AudioFileError, open_audio

        try:
            audio = open_audio(args.wav)
        except AudioFileError as error:
            raise MicError(str(error)) from None
        rate = audio.sample_rate
    else:
        check_microphone()
        rate = args.sample_rate
    try:
        ws = await connect(args.url, open_timeout=args.connect_timeout)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
        raise MicError(f"cannot connect to {args.url}: {error}") from None
    async with ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "f32le",
                                  "granularity": args.granularity, "decoding": args.decoding,
                                  "interim_results": not args.no_interim}))
        ready = json.loads(await ws.recv())
        if ready["type"] == "error":
            raise MicError(f"the server refused the stream: {ready['message']}")
        if args.json:
            show(ready, True)
        if args.wav:  # audio starts once the server is ready, so pacing starts there too
            source = asyncio.create_task(wav_source(audio, queue))
        else:
            import signal

            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C ends the stream cleanly
            source = asyncio.create_task(mic_source(queue, rate, stop))

        async def send():
            while (block := await queue.get()) is not None:
                await ws.send(block.astype("<f4").tobytes())
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        status = 0
        try:
            async for message in ws:
                event = json.loads(message)
                show(event, args.json)
                if event["type"] == "error":
                    print(f"\nerror from the server: {event['message']}", file=sys.stderr)
                    status = 1
        except ConnectionClosed as error:
            print(f"\nerror: the connection closed: {error}", file=sys.stderr)
            status = 1
        finally:
            sender.cancel()
            source.cancel()
        if source.done() and not source.cancelled() and source.exception() is not None:
            raise source.exception()
        return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.mic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8080/", help="server WebSocket URL (default: %(default)s)")
    parser.add_argument("--wav", type=Path, help="stream this file at real-time pace instead of the microphone")
    parser.add_argument("--granularity", default="auto", help="a granularity of the served model, or auto")
    parser.add_argument("--decoding", choices=["greedy", "beam"], default="greedy")
    parser.add_argument("--sample-rate", type=int, default=16000, help="microphone capture rate")
    parser.add_argument("--no-interim", action="store_true", help="final results only")
    parser.add_argument("--json", action="store_true", help="print the server's events as JSON lines")
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except MicError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
