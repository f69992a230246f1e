"""What token merging buys: per granularity, offline and streaming, the fraction of encoder tokens
kept, the WER, and the wall time of the encoder and of the joiner + search per second of audio,
with speed ratios against the finest granularity measured in the same run.

    python -m bench.merging --checkpoint exp/synthetic-matryoshka/final.pt --data-dir data/synthetic/prepared

Every utterance is decoded alone (batch 1, as a live stream is served), greedy search. Streaming
feeds the encoder one chunk at a time with its state, exactly as the recognizer does, and times
each chunk's encoder step and search step. Rows go to BENCHMARKS.md unless --no-record.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from asr.checkpoint import load_checkpoint
from asr.config import DataConfig
from asr.data.datamodule import load_cuts
from asr.decoding import GreedySearch, StreamingDecoder
from asr.evaluate import score
from asr.model.conformer import SUBSAMPLING_FACTOR
from bench.report import machine, record

log = logging.getLogger("bench.merging")


@dataclass
class Totals:
    encoder: float = 0.0  # seconds of encoder compute
    search: float = 0.0  # seconds of decoder + joiner + greedy search
    frames: int = 0  # encoder frames (40 ms)
    tokens: int = 0  # encoder output tokens after merging
    errors: int = 0
    words: int = 0

    @property
    def kept(self) -> float:
        return self.tokens / max(1, self.frames)

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / max(1, self.words)


@torch.inference_mode()
def decode_one(model, feats: torch.Tensor, granularity: str, chunk: int, left: int, totals: Totals) -> list[int]:
    """Decode one utterance (feats (T, F)); add its timings and token counts to `totals`. Offline
    is one encoder call on everything; streaming one call per chunk with the state."""
    decoder = StreamingDecoder(model, GreedySearch(), 1)
    encoder = model.encoder
    state = encoder.init_state(1, left) if chunk > 0 else None
    step = SUBSAMPLING_FACTOR * chunk if chunk > 0 else feats.shape[0]
    for start in range(0, feats.shape[0], step):
        piece = feats[start : start + step][None]
        started = time.perf_counter()
        enc = encoder(piece, torch.tensor([piece.shape[1]]), state=state, chunk_size=chunk, granularity=granularity)
        middle = time.perf_counter()
        state = enc.state
        if enc.out.shape[1]:
            decoder.accept(enc.out, enc.out_lens, enc.spans)
        totals.encoder += middle - started
        totals.search += time.perf_counter() - middle
        totals.frames += int(enc.frame_lens.sum())
        totals.tokens += int(enc.out_lens.sum())
    return list(decoder.results[0].tokens)


def main(argv: list[str] | None = None) -> list[list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a serving checkpoint with named granularities")
    parser.add_argument("--data-dir", default="data/synthetic/prepared", help="prepared data (recipe output)")
    parser.add_argument("--part", default="test-clean", help="test set to decode")
    parser.add_argument("--chunks", nargs="+", type=int, default=[-1, 8, 16],
                        help="encoder frames per chunk (40 ms each); -1 = offline full context")
    parser.add_argument("--left-context", type=int, default=64, help="streaming left context, encoder frames")
    parser.add_argument("--max-utterances", type=int, default=0, help="decode only the first N (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    granularities = list(model.encoder.granularities)
    cuts = list(load_cuts(DataConfig(data_dir=args.data_dir), (args.part,)))
    if args.max_utterances:
        cuts = cuts[: args.max_utterances]
    utterances = [(torch.from_numpy(c.load_features()), " ".join(s.text for s in c.supervisions).split()) for c in cuts]
    audio_seconds = sum(c.duration for c in cuts)
    decode_one(model, utterances[0][0], granularities[0], -1, args.left_context, Totals())  # warm-up
    rows, results = [], {}
    for chunk in args.chunks:
        mode = "offline" if chunk <= 0 else f"stream {chunk * 40} ms"
        for name in granularities:
            totals = Totals()
            for feats, ref in tqdm(utterances, desc=f"{name} {mode}", leave=False):
                hyp = tokenizer.decode(decode_one(model, feats, name, chunk, args.left_context, totals)).split()
                subs, dels, ins, _ = score(ref, hyp)
                totals.errors += subs + dels + ins
                totals.words += len(ref)
            results[(mode, name)] = totals
            base = results[(mode, granularities[0])]
            total = (totals.encoder + totals.search) / audio_seconds
            speedup = (base.encoder + base.search) / max(1e-9, totals.encoder + totals.search)
            row = [name, mode, f"{100 * totals.kept:.1f}%", f"{totals.wer:.2f}",
                   f"{totals.encoder / audio_seconds:.4f}", f"{totals.search / audio_seconds:.4f}", f"{total:.4f}",
                   f"{base.encoder / max(1e-9, totals.encoder):.2f}x", f"{speedup:.2f}x"]
            rows.append(row)
            log.info("%s %s: kept %s, WER %s, encoder %s s/s, joiner+search %s s/s, total %s s/s, "
                     "encoder speed-up %s, total speed-up %s", *row)
    columns = ["granularity", "mode", "tokens kept", "WER %", "encoder s/s", "joiner+search s/s", "total s/s",
               "encoder speed-up", "total speed-up"]
    print("| " + " | ".join(columns) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.no_record:
        note = (f"Per granularity: encoder tokens kept, WER and compute seconds per second of audio, batch 1, greedy; "
                f"speed-ups against `{granularities[0]}` in the same run. Test set: {args.part}, "
                f"{len(cuts)} utterances, {audio_seconds / 60:.1f} min; checkpoint {args.checkpoint}; {machine()}.")
        record("Token merging: granularity trade-off", columns, rows, note)
    return rows


if __name__ == "__main__":
    main()
