"""Encoder + joiner + search time per second of audio, offline and streaming, for a ~20M model.

Without --checkpoint the model is randomly initialised and the joiner's blank bias is calibrated
(bisection, per mode, with greedy search) so that greedy emits about one token per 4 encoder frames,
like a trained BPE-500 model on read speech; otherwise a random model emits up to
`max_symbols_per_frame` tokens on every frame, or none, and the search time would mean nothing. Times are wall-clock seconds of compute per second of audio (real-time
factor), median of --repeats runs, on torch's default thread count.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from asr.checkpoint import load_checkpoint
from asr.config import EncoderConfig, ModelConfig
from asr.decoding import GreedySearch, StreamingDecoder, make_search
from asr.model import Transducer
from bench.report import record

FRAME_SECONDS = 0.01


@dataclass
class Timing:
    encoder: float
    search: float  # decoder + joiner + search
    tokens: int


def build_model(args, feats: torch.Tensor) -> Transducer:
    if args.checkpoint:
        return load_checkpoint(args.checkpoint).model
    model = Transducer(ModelConfig(vocab_size=500, encoder=EncoderConfig(dropout=0.0))).eval()
    return model


@torch.inference_mode()
def calibrate_blank_bias(model: Transducer, run, feats: torch.Tensor, tokens_per_frame: float) -> None:
    """Set the blank logit's bias so that `run(model, feats)` emits `tokens_per_frame`."""
    bias = model.joiner.output.bias
    base = float(bias[model.blank_id])
    low, high = -10.0, 20.0
    for _ in range(10):
        bias[model.blank_id] = base + (low + high) / 2
        rate = run(model, feats).tokens / (feats.shape[1] // 4)
        low, high = ((low + high) / 2, high) if rate > tokens_per_frame else (low, (low + high) / 2)
    bias[model.blank_id] = base + (low + high) / 2  # the bracket's centre, not the last probe


def search_for(name: str):
    """A search by name; "greedy-by-frame" is greedy search with one joiner call per frame (a window
    of 1), the textbook loop that the default windowed greedy search replaces: same tokens."""
    return GreedySearch(window=1) if name == "greedy-by-frame" else make_search(name)


def run_offline(model, feats, search_name) -> Timing:
    lens = torch.tensor([feats.shape[1]])
    start = time.perf_counter()
    enc = model.encoder(feats, lens)
    middle = time.perf_counter()
    decoder = StreamingDecoder(model, search_for(search_name), 1)
    decoder.accept(enc.out, enc.out_lens)
    end = time.perf_counter()
    return Timing(middle - start, end - middle, len(decoder.results[0].tokens))


def run_streaming(model, feats, search_name, chunk, left) -> Timing:
    state = model.encoder.init_state(1, left)
    decoder = StreamingDecoder(model, search_for(search_name), 1)
    encoder_time = search_time = 0.0
    step = 4 * chunk
    for begin in range(0, feats.shape[1], step):
        piece = feats[:, begin : begin + step]
        t0 = time.perf_counter()
        enc = model.encoder(piece, torch.tensor([piece.shape[1]]), state=state, chunk_size=chunk)
        t1 = time.perf_counter()
        state = enc.state
        if enc.out.shape[1]:
            decoder.accept(enc.out, enc.out_lens)
        search_time += time.perf_counter() - t1
        encoder_time += t1 - t0
    return Timing(encoder_time, search_time, len(decoder.results[0].tokens))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random ~20M model)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=8, help="streaming chunk in encoder frames (8 = 320 ms)")
    parser.add_argument("--left", type=int, default=64, help="streaming left context in encoder frames")
    parser.add_argument("--search", nargs="+", default=["greedy", "beam"],
                        choices=["greedy", "beam", "greedy-by-frame"],
                        help="search strategies to time on the same model (greedy-by-frame: one joiner call per "
                             "frame, the loop the default greedy search replaces)")
    parser.add_argument("--tokens-per-frame", type=float, default=0.25, help="random model only, see above")
    parser.add_argument("--no-record", action="store_true", help="print only; do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    feats = torch.randn(1, int(args.seconds / FRAME_SECONDS), 80)
    model = build_model(args, feats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model {params:.1f}M parameters, {args.seconds:.0f} s of audio, {torch.get_num_threads()} threads")
    rows = []
    with torch.inference_mode():
        run_offline(model, feats[:, :400], "greedy")  # warm-up
        for mode in ("offline", "streaming"):
            def run(model, feats, search):
                if mode == "offline":
                    return run_offline(model, feats, search)
                return run_streaming(model, feats, search, args.chunk, args.left)

            if not args.checkpoint:  # calibrated with greedy; beam then runs on the very same model
                calibrate_blank_bias(model, lambda m, f: run(m, f, "greedy"), feats, args.tokens_per_frame)
            label = mode if mode == "offline" else f"streaming {args.chunk * 40} ms chunks, {args.left * 40 / 1000:g} s left"
            for search in args.search:
                runs = [run(model, feats, search) for _ in range(args.repeats)]
                encoder = statistics.median(r.encoder for r in runs) / args.seconds
                search_time = statistics.median(r.search for r in runs) / args.seconds
                print(f"{label:>38} {search:>6}: encoder {encoder:.4f}  joiner+search {search_time:.4f}  "
                      f"total {encoder + search_time:.4f} s per s of audio ({runs[0].tokens} tokens)")
                rows.append([f"{params:.1f}M", label, search, f"{encoder:.4f}", f"{search_time:.4f}",
                             f"{encoder + search_time:.4f}", f"{runs[0].tokens / args.seconds:.1f}"])
    if not args.no_record:
        record(
            "Inference time per second of audio (foundation encoder, no merging)",
            ["params", "mode", "search", "encoder s/s", "joiner+search s/s", "total s/s", "tokens/s"],
            rows,
            note="Compute seconds per second of audio, batch 1 (lower is better). Random weights unless a "
                 "checkpoint is named; see bench/inference.py for how emissions are kept realistic.",
        )


if __name__ == "__main__":
    main()
