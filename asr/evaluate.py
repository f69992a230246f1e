"""Decode test sets with a checkpoint and score WER per test set, decoding method and chunk size.

`python -m asr.evaluate --checkpoint exp/x/final.pt --data-dir data/librispeech --parts test-clean`
writes, beside the checkpoint, `errors-<part>-<method>-<mode>.txt` (per-utterance alignments) and
`wer.md` (the summary table), and records the figures in the checkpoint's metadata.

Streaming is evaluated with the streaming chunk mask in one batched pass: the chunk-by-chunk
encoder equals that pass (tests/model/test_streaming.py), so the WER is the streaming WER.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import kaldialign
import torch
from tqdm import tqdm

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.config import DataConfig
from asr.data.datamodule import eval_dataloader, load_cuts
from asr.decoding import decode, make_search
from asr.model.transducer import Transducer
from asr.tokenizer import Tokenizer

log = logging.getLogger("asr.evaluate")


@dataclass(frozen=True)
class DecodeSetting:
    method: str  # "greedy" or "beam"
    chunk_size: int  # encoder frames per chunk; -1 = offline full context
    left_context: int = 64  # encoder frames of left context when streaming
    granularity: str | None = None  # merge granularity; None = the model's default (finest); "all" = each

    @property
    def name(self) -> str:
        mode = "offline" if self.chunk_size <= 0 else f"chunk{self.chunk_size * 40}ms"
        return f"{self.method}-{mode}" + (f"-{self.granularity}" if self.granularity else "")


@dataclass(frozen=True)
class WerResult:
    part: str
    setting: str
    words: int
    substitutions: int
    deletions: int
    insertions: int
    utterances: int
    tokens_kept: float = 1.0  # encoder output tokens / encoder frames (below 1 when frames merge)

    @property
    def wer(self) -> float:
        return 100.0 * (self.substitutions + self.deletions + self.insertions) / max(1, self.words)


def score(ref: list[str], hyp: list[str]) -> tuple[int, int, int, list]:
    """Word-level (substitutions, deletions, insertions, alignment)."""
    alignment = kaldialign.align(ref, hyp, "*")
    subs = sum(1 for r, h in alignment if r != h and r != "*" and h != "*")
    dels = sum(1 for r, h in alignment if h == "*")
    ins = sum(1 for r, h in alignment if r == "*")
    return subs, dels, ins, alignment


@torch.no_grad()
def evaluate_part(model: Transducer, tokenizer: Tokenizer, data: DataConfig, part: str, setting: DecodeSetting,
                  out_dir: Path, device: torch.device) -> WerResult:
    cuts = load_cuts(data, (part,))
    search = make_search(setting.method)
    totals = [0, 0, 0, 0, 0]  # words, subs, dels, ins, utterances
    frames = tokens = 0
    lines = []
    for batch in tqdm(eval_dataloader(cuts, tokenizer, data), desc=f"{part} {setting.name}", leave=False):
        batch = batch.to(device)
        enc = model.encoder(batch.features, batch.feature_lens, chunk_size=setting.chunk_size,
                            left_context=setting.left_context if setting.chunk_size > 0 else -1,
                            granularity=setting.granularity)
        hyps = decode(model, search, enc.out, enc.out_lens, enc.spans)
        frames += int(enc.frame_lens.sum())
        tokens += int(enc.out_lens.sum())
        for cut_id, ref_text, hyp in zip(batch.cut_ids, batch.texts, hyps):
            ref, hyp_words = ref_text.split(), tokenizer.decode(list(hyp.tokens)).split()
            subs, dels, ins, alignment = score(ref, hyp_words)
            for i, value in enumerate((len(ref), subs, dels, ins, 1)):
                totals[i] += value
            shown = " ".join(r if r == h else f"({r}->{h})" for r, h in alignment)
            lines.append(f"{cut_id}\tS={subs} D={dels} I={ins}\t{shown}")
    result = WerResult(part, setting.name, *totals[:4], totals[4], tokens / max(1, frames))
    errors = out_dir / f"errors-{part}-{setting.name}.txt"
    errors.write_text(f"%WER {result.wer:.2f} [ {sum(totals[1:4])} / {totals[0]} ]\n" + "\n".join(sorted(lines)) + "\n")
    log.info("%s %s: WER %.2f%% (%d words, %d utterances, %.0f%% of encoder frames kept)", part, setting.name,
             result.wer, result.words, result.utterances, 100 * result.tokens_kept)
    return result


def evaluate(checkpoint: Path, data: DataConfig, parts: tuple[str, ...], settings: list[DecodeSetting],
             device: str = "cpu") -> list[WerResult]:
    ckpt = load_checkpoint(checkpoint, device)
    names = ckpt.model.encoder.granularities
    settings = [dataclasses.replace(s, granularity=g) for s in settings
                for g in (names if s.granularity == "all" else [s.granularity])]
    for setting in settings:  # an unknown granularity fails now, naming the valid ones
        ckpt.model.encoder.merge_values(setting.granularity, 1, device)
    out_dir = checkpoint.parent
    results = [evaluate_part(ckpt.model, ckpt.tokenizer, data, part, s, out_dir, torch.device(device))
               for part in parts for s in settings]
    table = ["| test set | decoding | WER % | sub | del | ins | words | utterances | tokens kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r.part} | {r.setting} | {r.wer:.2f} | {r.substitutions} | {r.deletions} | {r.insertions} | "
              f"{r.words} | {r.utterances} | {100 * r.tokens_kept:.0f}% |" for r in results]
    (out_dir / "wer.md").write_text(f"# WER of {checkpoint.name}\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))
    meta = dict(ckpt.meta)
    meta["wer"] = {f"{r.part}/{r.setting}": round(r.wer, 3) for r in results}
    save_checkpoint(checkpoint, ckpt.model, ckpt.tokenizer, meta)
    return results


def main(argv: list[str] | None = None) -> list[WerResult]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a serving checkpoint (e.g. exp/x/final.pt)")
    parser.add_argument("--data-dir", default=DataConfig.data_dir, help="prepared data directory")
    parser.add_argument("--parts", nargs="+", default=list(DataConfig.test_parts), help="test sets to decode")
    parser.add_argument("--methods", nargs="+", default=["greedy"], choices=["greedy", "beam"])
    parser.add_argument("--chunks", nargs="+", type=int, default=[-1, 8],
                        help="chunk sizes in encoder frames (40 ms each); -1 = offline full context")
    parser.add_argument("--left-context", type=int, default=64, help="streaming left context in encoder frames")
    parser.add_argument("--granularities", nargs="+", default=[None], metavar="NAME",
                        help="merge granularities to decode at (default: the model's finest); 'all' = every one")
    parser.add_argument("--max-duration", type=float, default=300.0, help="seconds of audio per decoding batch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = DataConfig(data_dir=args.data_dir, max_duration=args.max_duration, num_workers=0)
    settings = [DecodeSetting(m, c, args.left_context, g) for g in args.granularities for m in args.methods
                for c in args.chunks]
    return evaluate(args.checkpoint, data, tuple(args.parts), settings, args.device)


if __name__ == "__main__":
    main()
