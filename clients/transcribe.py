"""Transcribe recordings of any length through the server's gRPC Transcribe call.

    python -m clients.transcribe --server 127.0.0.1:50051 talk.flac interview.mp3 --format srt vtt --output subs/

Each file is read in blocks (WAV, FLAC, OGG, MP3 through soundfile; anything else through ffmpeg
when installed), mixed to mono and streamed at its own sample rate; the server resamples, cuts
it into segments at pauses and sends each segment back as soon as it is decoded. A progress bar
per file shows seconds of audio done and the speed. A file that fails (not audio, empty, server
at capacity) gets one line on stderr; the other files still finish, and the exit code is 1.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc
from tqdm import tqdm

from clients.audio_files import AudioFileError, open_audio
from clients.formats import WRITERS, Segment, Transcript, Word
from proto.generate import ensure_stubs

pb2, pb2_grpc = ensure_stubs()


class TranscribeError(RuntimeError):
    pass


async def transcribe_file(stub, path: Path, granularity: str, decoding: str, position: int,
                          quiet: bool) -> Transcript:
    audio = open_audio(path)
    transcript = Transcript(file=str(path))
    bar = tqdm(total=round(audio.duration, 1) or None, unit="s", desc=path.name[:30], position=position,
               leave=True, disable=quiet, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} s "
                                                     "[{elapsed}, {rate_fmt}]")

    accepted = asyncio.Event()

    async def requests():
        yield pb2.StreamingRecognizeRequest(config=pb2.RecognitionConfig(
            sample_rate=audio.sample_rate, encoding="f32le", granularity=granularity, decoding=decoding,
            timestamps=True))
        # Audio only once the server accepted the stream: a refusal (full server, bad config) then
        # arrives as its own status instead of as a failed send.
        await accepted.wait()
        for block in audio.blocks():
            yield pb2.StreamingRecognizeRequest(audio=block.astype("<f4").tobytes())

    try:
        async for response in stub.Transcribe(requests()):
            kind = response.WhichOneof("response")
            if kind == "ready":
                transcript.model = response.ready.model
                accepted.set()
            elif kind == "segment":
                r = response.segment
                transcript.segments.append(Segment(r.segment, round(r.start, 3), round(r.end, 3), r.text,
                                                   tuple(Word(w.word, round(w.start, 3), round(w.end, 3))
                                                         for w in r.words), r.granularity))
                transcript.granularity = r.granularity
            elif kind in ("progress_seconds", "done_seconds"):
                seconds = getattr(response, kind)
                bar.update(round(seconds - bar.n, 1))
                if kind == "done_seconds":
                    transcript.duration = round(seconds, 3)
    except grpc.aio.AioRpcError as error:
        raise TranscribeError(describe(error)) from None
    finally:
        bar.close()
    return transcript


def describe(error: grpc.aio.AioRpcError) -> str:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"the server is unreachable ({error.details()})"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return f"the server refused: {error.details()}"
    return f"{code.name.lower()}: {error.details()}"


def write(transcript: Transcript, formats: list[str], output: Path | None) -> None:
    for fmt in formats:
        render, extension = WRITERS[fmt]
        text = render(transcript)
        if output is None:
            sys.stdout.write(text)
            continue
        output.mkdir(parents=True, exist_ok=True)
        (output / f"{Path(transcript.file).stem}.{extension}").write_text(text)


async def run(args: argparse.Namespace) -> int:
    async with grpc.aio.insecure_channel(args.server, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), args.connect_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            print(f"error: cannot reach the server at {args.server} (no answer in {args.connect_timeout:g} s)",
                  file=sys.stderr)
            return 1
        stub = pb2_grpc.RecognizerStub(channel)
        limit = asyncio.Semaphore(args.jobs)
        failures = 0

        async def one(index: int, path: Path) -> None:
            nonlocal failures
            async with limit:
                started = time.perf_counter()
                try:
                    transcript = await transcribe_file(stub, path, args.granularity, args.decoding,
                                                       index % args.jobs, args.quiet)
                except (AudioFileError, TranscribeError) as error:
                    failures += 1
                    print(f"error: {path}: {error}" if isinstance(error, TranscribeError) else f"error: {error}",
                          file=sys.stderr)
                    return
                write(transcript, args.format, args.output)
                if not args.quiet:
                    speed = transcript.duration / max(1e-9, time.perf_counter() - started)
                    print(f"{path}: {transcript.duration:.1f} s, {len(transcript.segments)} segments, "
                          f"{speed:.1f}x real time", file=sys.stderr)

        await asyncio.gather(*(one(i, Path(p)) for i, p in enumerate(args.files)))
        return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.transcribe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="recordings to transcribe")
    parser.add_argument("--server", default="127.0.0.1:50051", help="gRPC address HOST:PORT (default: %(default)s)")
    parser.add_argument("--format", nargs="+", choices=sorted(WRITERS), default=["text"],
                        help="output format(s), several at once from one transcription (default: text)")
    parser.add_argument("--output", type=Path, help="write <file stem>.<ext> here instead of printing")
    parser.add_argument("--granularity", default="auto", help="a granularity of the served model, or auto")
    parser.add_argument("--decoding", choices=["greedy", "beam"], default="greedy")
    parser.add_argument("--jobs", type=int, default=1, help="files transcribed at once (default: 1)")
    parser.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for the server")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
