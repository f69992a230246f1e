"""Decode test sets with a checkpoint and score WER per test set, decoding method and chunk size.

`python -m asr.evaluate --checkpoint exp/x/final.pt --data-dir data/librispeech --parts test-clean`
writes, beside the checkpoint, `errors-<part>-<method>-<mode>.txt` (per-utterance alignments),
`wer.md` (the summary table) and `wer.png` (WER against the frames each granularity keeps, and per
speaking-rate third; asr.plots), and records the figures in the checkpoint's metadata.

The table also slices each WER by speaking rate: the test set's utterances are split into thirds by
their reference's BPE tokens per second, and each third is scored alone. Merging granularities
differ most there: a coarse one keeps a fixed share of encoder frames whatever the speech rate, so
fast speech runs short of frames per output token first (docs/merging.md).

`--merge threshold:1.0,0.9,0.8,0.7` decodes a merging model with other merge settings than it was
trained with (one value per granularity), without retraining: the results go to a subfolder named
after the setting, and the checkpoint is left alone.

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
from asr.model.conformer import validate_merge_config
from asr.model.transducer import Transducer
from asr.plots import plot_wer, read_wer_table, redraw_quietly
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
class UtteranceScore:
    rate: float  # reference BPE tokens per second of audio
    words: int
    errors: int


@dataclass(frozen=True)
class RateThirds:
    """WER of the slowest, middle and fastest third of a test set's utterances by speaking rate."""

    edges: tuple[float, float]  # tokens/s between slow and middle, and between middle and fast
    wer: tuple[float, float, float]

    def __str__(self) -> str:
        return " / ".join(f"{w:.2f}" for w in self.wer)


def rate_thirds(scores: list[UtteranceScore]) -> RateThirds | None:
    """Sort by speaking rate, cut into three equal thirds (the last takes the remainder), and score
    each. The cut depends only on the references, so every decoding of a part shares it."""
    if len(scores) < 3:
        return None
    ordered = sorted(scores, key=lambda s: s.rate)
    third = len(ordered) // 3
    groups = (ordered[:third], ordered[third : 2 * third], ordered[2 * third :])
    wer = tuple(100.0 * sum(s.errors for s in g) / max(1, sum(s.words for s in g)) for g in groups)
    return RateThirds((groups[1][0].rate, groups[2][0].rate), wer)


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
    by_rate: RateThirds | None = None  # WER per speaking-rate third; None below 3 utterances

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
    utterances: list[UtteranceScore] = []
    frame_seconds = model.config.features.frame_shift_ms / 1000  # of the input features, before subsampling
    for batch in tqdm(eval_dataloader(cuts, tokenizer, data), desc=f"{part} {setting.name}", leave=False):
        batch = batch.to(device)
        enc = model.encoder(batch.features, batch.feature_lens, chunk_size=setting.chunk_size,
                            left_context=setting.left_context if setting.chunk_size > 0 else -1,
                            granularity=setting.granularity)
        hyps = decode(model, search, enc.out, enc.out_lens, enc.spans)
        frames += int(enc.frame_lens.sum())
        tokens += int(enc.out_lens.sum())
        input_frames = batch.feature_lens.tolist()
        for cut_id, ref_text, hyp, num_frames in zip(batch.cut_ids, batch.texts, hyps, input_frames):
            ref, hyp_words = ref_text.split(), tokenizer.decode(list(hyp.tokens)).split()
            subs, dels, ins, alignment = score(ref, hyp_words)
            rate = len(tokenizer.encode(ref_text)) / max(num_frames * frame_seconds, 1e-3)
            utterances.append(UtteranceScore(rate, len(ref), subs + dels + ins))
            for i, value in enumerate((len(ref), subs, dels, ins, 1)):
                totals[i] += value
            shown = " ".join(r if r == h else f"({r}->{h})" for r, h in alignment)
            lines.append(f"{cut_id}\tS={subs} D={dels} I={ins}\t{shown}")
    result = WerResult(part, setting.name, *totals[:4], totals[4], tokens / max(1, frames), rate_thirds(utterances))
    errors = out_dir / f"errors-{part}-{setting.name}.txt"
    errors.write_text(f"%WER {result.wer:.2f} [ {sum(totals[1:4])} / {totals[0]} ]\n" + "\n".join(sorted(lines)) + "\n")
    log.info("%s %s: WER %.2f%% (%d words, %d utterances, %.0f%% of encoder frames kept)", part, setting.name,
             result.wer, result.words, result.utterances, 100 * result.tokens_kept)
    return result


def parse_merge(text: str) -> tuple[str, tuple[float, ...]]:
    """'threshold:1.0,0.9' -> ("threshold", (1.0, 0.9)), for --merge."""
    mode, _, values = text.partition(":")
    try:
        numbers = tuple(float(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--merge takes MODE:V1,V2,... (e.g. threshold:1.0,0.8), got {text!r}") from None
    if mode not in ("threshold", "ratio"):
        raise argparse.ArgumentTypeError(f"--merge mode must be 'threshold' or 'ratio', got {mode!r}")
    return mode, numbers


def override_merge(model: Transducer, mode: str, values: tuple[float, ...]) -> None:
    """Decode with other merge settings than the model was trained with: one value per granularity."""
    encoder = model.encoder
    merge = encoder.config.merge
    if not merge.layers:
        raise ValueError("this model has no merge modules; --merge needs a model trained with merge.layers")
    merge = dataclasses.replace(merge, mode=mode, values=values)
    validate_merge_config(merge, encoder.config.num_layers)  # one value per granularity, each in range
    encoder.config = dataclasses.replace(encoder.config, merge=merge)


def evaluate(checkpoint: Path, data: DataConfig, parts: tuple[str, ...], settings: list[DecodeSetting],
             device: str = "cpu", merge: tuple[str, tuple[float, ...]] | None = None) -> list[WerResult]:
    ckpt = load_checkpoint(checkpoint, device)
    out_dir = checkpoint.parent
    if merge is not None:
        override_merge(ckpt.model, *merge)
        out_dir = out_dir / f"merge-{merge[0]}-{'-'.join(f'{v:g}' for v in merge[1])}"
        out_dir.mkdir(exist_ok=True)
    names = ckpt.model.encoder.granularities
    settings = [dataclasses.replace(s, granularity=g) for s in settings
                for g in (names if s.granularity == "all" else [s.granularity])]
    for setting in settings:  # an unknown granularity fails now, naming the valid ones
        ckpt.model.encoder.merge_values(setting.granularity, 1, device)
    results = [evaluate_part(ckpt.model, ckpt.tokenizer, data, part, s, out_dir, torch.device(device))
               for part in parts for s in settings]
    table = ["| test set | decoding | WER % | sub | del | ins | words | utterances | tokens kept "
             "| WER slow / mid / fast third |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r.part} | {r.setting} | {r.wer:.2f} | {r.substitutions} | {r.deletions} | {r.insertions} | "
              f"{r.words} | {r.utterances} | {100 * r.tokens_kept:.0f}% | {r.by_rate or '-'} |" for r in results]
    edges = {r.part: r.by_rate.edges for r in results if r.by_rate}
    notes = [f"Speaking-rate thirds of {part}: below {lo:.1f}, {lo:.1f} to {hi:.1f}, and from {hi:.1f} "
             "reference BPE tokens per second." for part, (lo, hi) in edges.items()]
    title = f"# WER of {checkpoint.name}" + (f", merging {merge[0]} {list(merge[1])}" if merge else "")
    (out_dir / "wer.md").write_text(f"{title}\n\n" + "\n".join(table) + "\n"
                                    + "".join(f"\n{n}\n" for n in notes))
    print("\n".join(table + notes))
    picture = out_dir / "wer.png"  # drawn from the table just written, as `python -m asr.plots wer` would
    redraw_quietly(picture, lambda: plot_wer([(checkpoint.parent.name, read_wer_table(out_dir / "wer.md"))], picture))
    if merge is not None:
        return results  # the checkpoint's figures stay those of its own settings
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
    parser.add_argument("--merge", type=parse_merge, metavar="MODE:V1,V2,...",
                        help="decode with other merge settings: threshold or ratio and one value per granularity "
                             "(e.g. threshold:1.0,0.9,0.85,0.75); results go to merge-<setting>/ beside the checkpoint")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = DataConfig(data_dir=args.data_dir, max_duration=args.max_duration, num_workers=0)
    settings = [DecodeSetting(m, c, args.left_context, g) for g in args.granularities for m in args.methods
                for c in args.chunks]
    return evaluate(args.checkpoint, data, tuple(args.parts), settings, args.device, args.merge)


if __name__ == "__main__":
    main()
