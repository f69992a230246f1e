"""What token merging buys: per granularity, offline and streaming, the fraction of encoder tokens
kept, the WER, and the wall time of the encoder and of the joiner + search per second of audio,
with speed ratios against the finest granularity measured in the same run.

    python -m bench.merging --checkpoint exp/synthetic-matryoshka/final.pt --data-dir data/synthetic/prepared

    python -m bench.merging ... --device cuda --batch-sizes 1 64

    python -m bench.merging --random-model --chunks -1 8 --max-utterances 60

--random-model times a randomly initialised model of the GPU recipe's size (gpu-medium, 12 blocks,
merge modules after blocks 4 and 8, the Matryoshka ratios) instead of a checkpoint: how merging
scales when most of the encoder's compute comes after the merge points. Ratio merging drops the
same number of tokens whatever the weights, so its encoder timings are those of a trained model of
that size. Its WER is meaningless (shown as n/a). So that its search does the work of a trained
model's, the blank bias of its joiner is set per granularity (bisection, as bench/inference.py does)
to emit one token per 4 encoder frames of audio at every granularity: the same transcript length
however coarse the tokens are.

Greedy search. Batch 1 decodes every utterance alone, as a lone live stream is served; batch B
decodes B utterances side by side (sorted by length, padded), as the server batches streams.
Streaming feeds the encoder one chunk at a time with its state, exactly as the recognizer does, and
times each chunk's encoder step and search step (synchronising the GPU before each clock read).
Rows go to BENCHMARKS.md unless --no-record, and a picture of the trade-off (speed-up against
frames kept, WER against speed-up) to merging.png beside the checkpoint, or to --plot.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm import tqdm

from asr.checkpoint import load_checkpoint
from asr.config import DataConfig
from asr.data.datamodule import load_cuts
from asr.decoding import GreedySearch, StreamingDecoder, decode
from asr.evaluate import score
from asr.model.conformer import SUBSAMPLING_FACTOR
from asr.plots import SpeedPoint, plot_speed
from bench.inference import calibrate_blank_bias
from bench.load import random_checkpoint
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decode_batch(model, feats: list[torch.Tensor], granularity: str, chunk: int, left: int, totals: Totals,
                 device: torch.device) -> list[list[int]]:
    """Decode utterances side by side (feats: a list of (T, F)); add their timings and token counts
    to `totals`. Offline is one encoder call on everything; streaming one call per chunk with the
    state, rows whose audio has ended taking part with no new frames."""
    batch = len(feats)
    lens = torch.tensor([f.shape[0] for f in feats], device=device)
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(device)
    decoder = StreamingDecoder(model, GreedySearch(), batch)
    encoder = model.encoder
    state = encoder.init_state(batch, left, device=device) if chunk > 0 else None
    step = SUBSAMPLING_FACTOR * chunk if chunk > 0 else padded.shape[1]
    for start in range(0, padded.shape[1], step):
        piece = padded[:, start : start + step]
        piece_lens = (lens - start).clamp(min=0, max=piece.shape[1])
        synchronize(device)
        started = time.perf_counter()
        enc = encoder(piece, piece_lens, state=state, chunk_size=chunk, granularity=granularity)
        synchronize(device)
        middle = time.perf_counter()
        state = enc.state
        if enc.out.shape[1]:
            decoder.accept(enc.out, enc.out_lens, enc.spans)
        synchronize(device)
        totals.encoder += middle - started
        totals.search += time.perf_counter() - middle
        totals.frames += int(enc.frame_lens.sum())
        totals.tokens += int(enc.out_lens.sum())
    return [list(r.tokens) for r in decoder.results]


def calibrate_random_model(model, cuts, granularities: list[str], tokens_per_frame: float = 0.25) -> dict[str, float]:
    """Per granularity, the blank bias that makes a random model's greedy search emit
    `tokens_per_frame` tokens per (unmerged) encoder frame on the longest test utterance."""
    device = next(model.parameters()).device
    feats = torch.from_numpy(max(cuts, key=lambda c: c.duration).load_features())[None].to(device)

    def run(model, feats):
        enc = model.encoder(feats, torch.tensor([feats.shape[1]], device=device), granularity=name)
        return SimpleNamespace(tokens=len(decode(model, GreedySearch(), enc.out, enc.out_lens, enc.spans)[0].tokens))

    biases, base = {}, float(model.joiner.output.bias.detach()[model.blank_id])
    for name in granularities:
        model.joiner.output.bias.data[model.blank_id] = base
        calibrate_blank_bias(model, run, feats, tokens_per_frame)
        biases[name] = float(model.joiner.output.bias.detach()[model.blank_id])
    log.info("random model: blank bias per granularity for %.2f tokens per frame: %s", tokens_per_frame,
             {k: round(v, 2) for k, v in biases.items()})
    return biases


def main(argv: list[str] | None = None) -> list[list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a serving checkpoint with named granularities")
    source.add_argument("--random-model", action="store_true",
                        help="a random gpu-medium model with Matryoshka merging after blocks 4 and 8 (timing only)")
    parser.add_argument("--data-dir", default="data/synthetic/prepared", help="prepared data (recipe output)")
    parser.add_argument("--part", default="test-clean", help="test set to decode")
    parser.add_argument("--chunks", nargs="+", type=int, default=[-1, 8, 16],
                        help="encoder frames per chunk (40 ms each); -1 = offline full context")
    parser.add_argument("--left-context", type=int, default=64, help="streaming left context, encoder frames")
    parser.add_argument("--max-utterances", type=int, default=0, help="decode only the first N (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1],
                        help="utterances decoded side by side (1 = each alone, as a lone live stream)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    parser.add_argument("--plot", type=Path,
                        help="picture of the trade-off, .png or .svg (default: merging.png beside the checkpoint; "
                             "none for --random-model unless given)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuts = list(load_cuts(DataConfig(data_dir=args.data_dir), (args.part,)))
    if args.max_utterances:
        cuts = cuts[: args.max_utterances]
    checkpoint = args.checkpoint
    if args.random_model:
        checkpoint = str(Path(tempfile.mkdtemp(prefix="bench-merging-")) / "random-medium.pt")
        params = random_checkpoint(Path(checkpoint), [s.text for c in cuts for s in c.supervisions])
        log.info("random model: %.1fM parameters, merge modules after blocks 4 and 8", params)
    ckpt = load_checkpoint(checkpoint, device)
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    granularities = list(model.encoder.granularities)
    blank_bias = calibrate_random_model(model, cuts, granularities) if args.random_model else {}
    cuts.sort(key=lambda c: c.duration)  # batches of similar lengths, as a length-bucketing server would
    utterances = [(torch.from_numpy(c.load_features()), " ".join(s.text for s in c.supervisions).split()) for c in cuts]
    audio_seconds = sum(c.duration for c in cuts)
    rows, results, points = [], {}, []
    for batch_size in args.batch_sizes:
        batches = [utterances[i : i + batch_size] for i in range(0, len(utterances), batch_size)]
        for chunk in (-1, 8):  # warm-up: kernels, allocator and autotuning out of the timings
            decode_batch(model, [f for f, _ in batches[-1]], granularities[-1], chunk, args.left_context, Totals(),
                         device)
        for chunk in args.chunks:
            mode = "offline" if chunk <= 0 else f"stream {chunk * 40} ms"
            for name in granularities:
                if name in blank_bias:
                    model.joiner.output.bias.data[model.blank_id] = blank_bias[name]
                totals = Totals()
                for batch in tqdm(batches, desc=f"batch {batch_size} {name} {mode}", leave=False):
                    hyps = decode_batch(model, [f for f, _ in batch], name, chunk, args.left_context, totals, device)
                    for tokens, (_, ref) in zip(hyps, batch):
                        subs, dels, ins, _ = score(ref, tokenizer.decode(tokens).split())
                        totals.errors += subs + dels + ins
                        totals.words += len(ref)
                results[(batch_size, mode, name)] = totals
                base = results[(batch_size, mode, granularities[0])]
                total = (totals.encoder + totals.search) / audio_seconds
                speedup = (base.encoder + base.search) / max(1e-9, totals.encoder + totals.search)
                wer = "n/a" if args.random_model else f"{totals.wer:.2f}"
                row = [name, mode, str(batch_size), f"{100 * totals.kept:.1f}%", wer,
                       f"{totals.encoder / audio_seconds:.4f}", f"{totals.search / audio_seconds:.4f}",
                       f"{total:.4f}", f"{base.encoder / max(1e-9, totals.encoder):.2f}x", f"{speedup:.2f}x"]
                rows.append(row)
                points.append(SpeedPoint(f"{mode}, batch {batch_size}", name, totals.kept, speedup,
                                         None if args.random_model else totals.wer))
                log.info("%s %s batch %s: kept %s, WER %s, encoder %s s/s, joiner+search %s s/s, total %s s/s, "
                         "encoder speed-up %s, total speed-up %s", *row)
    columns = ["granularity", "mode", "batch", "tokens kept", "WER %", "encoder s/s", "joiner+search s/s", "total s/s",
               "encoder speed-up", "total speed-up"]
    print("| " + " | ".join(columns) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.no_record:
        note = (f"Per granularity: encoder tokens kept, WER and compute seconds per second of audio, greedy; "
                f"speed-ups against `{granularities[0]}` in the same run. Test set: {args.part}, "
                f"{len(cuts)} utterances, {audio_seconds / 60:.1f} min; checkpoint {checkpoint}; {machine()}.")
        record("Token merging: granularity trade-off", columns, rows, note)
    picture = args.plot or (None if args.random_model else Path(checkpoint).parent / "merging.png")
    if picture is not None:
        log.info("wrote %s", plot_speed(points, picture))
    return rows


if __name__ == "__main__":
    main()
