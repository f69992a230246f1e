"""Load test: N simulated live clients stream recordings at real-time pace over WebSocket to a
real server process; partial-result latency, real-time factor and CPU use per N, for a fixed
granularity and for `auto`, until real time breaks.

    python -m bench.load                                   # random ~19M Matryoshka model, N = 1, 2, 4, 8, ...
    python -m bench.load --model exp/x/final.pt --clients 1 8 32 64 --device cuda

Latency of a result = the moment the client receives it minus the moment it had sent the audio
the result covers (results carry `decoded`, the seconds of audio they cover). A level is *real
time* when the p95 latency stays under --max-latency and every stream is fully decoded within
--max-latency of its audio ending. Speed does not depend on what the weights learned, so without
--model a randomly initialised model of the GPU recipe's size (gpu-medium + Matryoshka merging)
is served. Rows go to BENCHMARKS.md unless --no-record.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

log = logging.getLogger("bench.load")
PIECE_SECONDS = 0.1  # a microphone client sends 100 ms at a time


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    granularities: list[str] = field(default_factory=list)
    lag: float = 0.0  # seconds from sending the last audio to receiving "done"
    error: str = ""


def load_audio(audio_dir: Path, seconds: float, count: int) -> tuple[list[np.ndarray], list[str]]:
    """`count` recordings of about `seconds`, each a different run of the corpus's utterances."""
    files = sorted(audio_dir.rglob("*.flac")) + sorted(audio_dir.rglob("*.wav"))
    if not files:
        raise SystemExit(f"no .flac or .wav under {audio_dir}; generate a corpus with `python -m recipes.synthetic.run`")
    clips = [sf.read(f, dtype="float32")[0] for f in files[:200]]
    texts = []
    for trans in audio_dir.rglob("*.trans.txt"):
        texts += [line.split(" ", 1)[1] for line in trans.read_text().splitlines() if " " in line]
    recordings = []
    for i in range(count):
        order = random.Random(i).sample(range(len(clips)), len(clips))
        pieces, total = [], 0.0
        for k in order:
            pieces.append(clips[k])
            total += clips[k].size / 16000
            if total >= seconds:
                break
        recordings.append(np.concatenate(pieces)[: int(seconds * 16000)])
    return recordings, texts


# The GPU recipe's model with Matryoshka merging after blocks 4 and 8 (as bench/gpu_recipe.sh trains it).
MEDIUM_CONFIGS = ("recipes/librispeech/conf/gpu-medium.yaml", "recipes/librispeech/conf/matryoshka.yaml")
MEDIUM_OVERRIDES = ("model.encoder.merge.layers=[4,8]",)


def random_checkpoint(path: Path, texts: list[str], configs: Sequence[str] = MEDIUM_CONFIGS,
                      overrides: Sequence[str] = MEDIUM_OVERRIDES) -> float:
    """A randomly initialised model of the given configs (default: gpu-medium with Matryoshka
    merging), saved as a serving checkpoint; its size in millions of parameters."""
    import torch

    from asr.checkpoint import save_checkpoint
    from asr.model import Transducer
    from asr.tokenizer import train_tokenizer
    from asr.train import load_config

    tokenizer = train_tokenizer(texts or ["HELLO WORLD"], vocab_size=256 if len(texts) > 50 else 30)
    config = load_config(list(configs), [*overrides, f"model.vocab_size={tokenizer.vocab_size}"])
    torch.manual_seed(0)
    model = Transducer(config.model).eval()
    save_checkpoint(path, model, tokenizer)
    return sum(p.numel() for p in model.parameters()) / 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        found = re.match(r"^(asr_[a-z_]+(?:_sum|_count|_total)?(?:\{[^}]*\})?)\s+([0-9.e+-]+)$", line)
        if found:
            values[found.group(1)] = float(found.group(2))
    return values


async def client(port: int, audio: np.ndarray, granularity: str, delay: float) -> ClientResult:
    from websockets.asyncio.client import connect

    result = ClientResult()
    sent_at: list[tuple[float, float]] = []  # (seconds of audio sent so far, when)
    await asyncio.sleep(delay)
    piece = int(PIECE_SECONDS * 16000)
    data = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    try:
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "granularity": granularity, "interim_results": True}))
            ready = json.loads(await ws.recv())
            if ready["type"] != "ready":
                result.error = ready.get("message", str(ready))
                return result

            async def receive():
                async for message in ws:
                    event = json.loads(message)
                    now = time.perf_counter()
                    if event["type"] in ("partial", "final"):
                        covered = event["decoded"] - 1e-6
                        sent = next((t for s, t in sent_at if s >= covered), None)
                        if sent is not None:
                            result.latencies.append(now - sent)
                        result.granularities.append(event["granularity"])
                    elif event["type"] == "done":
                        result.lag = now - sent_at[-1][1]
                    elif event["type"] == "error":
                        result.error = event["message"]

            receiver = asyncio.create_task(receive())
            start = time.perf_counter()
            for k, offset in enumerate(range(0, data.size, piece)):
                await asyncio.sleep(max(0.0, start + k * PIECE_SECONDS - time.perf_counter()))
                await ws.send(data[offset : offset + piece].tobytes())
                sent_at.append(((offset + piece) / 16000, time.perf_counter()))
            await ws.send(json.dumps({"type": "end"}))
            await receiver
    except Exception as error:  # a refused or dropped connection is a result, not a crash
        result.error = f"{type(error).__name__}: {error}"
    return result


async def run_level(port: int, recordings: list[np.ndarray], clients: int, granularity: str) -> list[ClientResult]:
    jitter = random.Random(clients)
    tasks = [client(port, recordings[i % len(recordings)], granularity, jitter.uniform(0, 1.0))
             for i in range(clients)]
    return await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> list[list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="serving checkpoint (default: a random gpu-medium + Matryoshka model)")
    parser.add_argument("--audio-dir", type=Path, default=Path("data/synthetic/corpus/LibriSpeech/test-clean"),
                        help="recordings to stream (.flac/.wav, 16 kHz)")
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64],
                        help="numbers of simultaneous clients to try, in order, until real time breaks")
    parser.add_argument("--granularities", nargs="+", default=["full", "auto"],
                        help="what the clients ask for; each is a separate series")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per client")
    parser.add_argument("--max-latency", type=float, default=1.0, help="p95 latency bound of 'real time' (s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--latency-target-ms", type=float, default=400.0, help="the server's auto target")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    recordings, texts = load_audio(args.audio_dir, args.seconds, 16)
    workdir = Path(tempfile.mkdtemp(prefix="asr-load-"))
    checkpoint = Path(args.model) if args.model else workdir / "random-medium.pt"
    if not args.model:
        params = random_checkpoint(checkpoint, texts)
        model_name = f"random gpu-medium + matryoshka ({params:.1f}M)"
    else:
        model_name = args.model
    rows = []
    for granularity in args.granularities:
        for clients in args.clients:
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "server", "--model", str(checkpoint), "--ws-port", str(port),
                 "--grpc-port", "-1", "--device", args.device, "--max-sessions", str(max(args.clients) + 8),
                 "--max-batch", str(args.max_batch), "--latency-target-ms", str(args.latency_target_ms),
                 "--log-level", "WARNING"])
            try:
                for _ in range(600):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                        break
                    except OSError:
                        time.sleep(0.1)
                cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
                results = asyncio.run(run_level(port, recordings, clients, granularity))
                cpu = (cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - wall_before)
                server_metrics = metrics(port)
            finally:
                server.terminate()
                server.wait(timeout=60)
            latencies = np.array([x for r in results for x in r.latencies]) if results else np.zeros(1)
            errors = [r.error for r in results if r.error]
            lag = max(r.lag for r in results)
            rtf = server_metrics.get("asr_step_seconds_sum", 0) / max(1e-9, server_metrics.get("asr_audio_seconds_total", 0))
            p50, p95, p99 = (np.percentile(latencies, q) if latencies.size else float("nan") for q in (50, 95, 99))
            realtime = not errors and p95 <= args.max_latency and lag <= args.max_latency
            used = [g for r in results for g in r.granularities]
            mix = ", ".join(f"{g} {100 * used.count(g) / len(used):.0f}%" for g in sorted(set(used))) if used else "-"
            batch = server_metrics.get("asr_batch_size_sum", 0) / max(1, server_metrics.get("asr_batch_size_count", 1))
            row = [model_name, args.device, granularity, str(clients), f"{1000 * p50:.0f}", f"{1000 * p95:.0f}",
                   f"{1000 * p99:.0f}", f"{rtf:.3f}", f"{cpu:.2f}", f"{batch:.1f}", mix,
                   "yes" if realtime else "no" + (f" ({errors[0][:40]})" if errors else "")]
            rows.append(row)
            log.info("%s x%d: latency p50/p95/p99 %s/%s/%s ms, RTF %s, CPU %s cores, batch %s, %s, real time: %s",
                     granularity, clients, *row[4:])
            costs = {}  # what auto granularity compares: compute per stream of a step, at the largest batch
            for key, value in server_metrics.items():
                labels = dict(re.findall(r'(\w+)="([^"]*)"', key)) if key.startswith("asr_stream_step_seconds{") else {}
                if labels and int(labels["batch"]) >= costs.get(labels["granularity"], (0, 0))[0]:
                    costs[labels["granularity"]] = (int(labels["batch"]), value)
            if costs:
                log.info("%s x%d: step compute per stream: %s", granularity, clients,
                         ", ".join(f"{g} {1000 * v:.2f} ms (batch {b})" for g, (b, v) in costs.items()))
            if not realtime:
                break
    columns = ["model", "device", "granularity", "clients", "latency p50 ms", "p95 ms", "p99 ms", "RTF",
               "CPU cores", "mean batch", "granularities used", "real time"]
    print("| " + " | ".join(columns) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.no_record:
        from bench.report import record

        record("Server load: simulated live clients", columns, rows,
               note=f"Each client streams {args.seconds:g} s of synthetic test speech in 100 ms pieces at real-time "
                    f"pace over WebSocket (interim results on). Latency: result received minus when its audio was "
                    f"sent. RTF: the server's model compute per second of audio. Real time: p95 latency and the "
                    f"final lag under {args.max_latency:g} s, no errors.")
    return rows


if __name__ == "__main__":
    main()
