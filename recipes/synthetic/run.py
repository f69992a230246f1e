"""The whole recipe on the synthetic corpus, one command: generate -> prepare -> train -> decode.

    python -m recipes.synthetic.run                      # 8 h Austen corpus, cpu-small model, ~43 min on 2 cores
    # 100 h, split as LibriSpeech's 100 and 360, with the GPU config:
    python -m recipes.synthetic.run --train-hours 22 --train-360-hours 78 --config recipes/librispeech/conf/gpu-medium.yaml

The 8 h are split between train-clean-100 (1.75 h, 251 speakers) and train-clean-360 (6.25 h, 921
speakers), as LibriSpeech splits its 460 clean hours, so training hears 1,172 speakers.

Every step is resumable: the corpus and the prepared data are skipped when complete, training
resumes from its last checkpoint. Prints the WER table and the time each step took.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from asr import evaluate as evaluate_module
from asr.config import apply_overrides
from asr.train import Trainer, load_config
from recipes.librispeech.prepare import PrepareConfig, prepare

log = logging.getLogger("recipes.synthetic.run")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("data/synthetic"), help="corpus and prepared data")
    parser.add_argument("--exp-dir", type=Path, default=Path("exp/synthetic-cpu-small"), help="checkpoints, logs, WER")
    parser.add_argument("--config", action="append",
                        help="training config (YAML); repeatable, a later file overriding an earlier one "
                             "(default: recipes/librispeech/conf/cpu-small.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one training config field (repeatable); data.data_dir and "
                             "data.train_parts follow from --work-dir and the corpus flags")
    parser.add_argument("--train-hours", type=float, default=1.75,
                        help="hours of synthetic training speech in train-clean-100 (251 speakers)")
    parser.add_argument("--train-360-hours", type=float, default=6.25,
                        help="hours in train-clean-360 as well (921 more speakers on the other training voice "
                             "pairs; 0 leaves it out); both parts train. The default 8 h split as LibriSpeech's")
    parser.add_argument("--train-utterances", type=int,
                        help="utterances in train-clean-100 instead of hours, and no train-clean-360 (tests)")
    parser.add_argument("--dev-minutes", type=float, default=8.0, help="minutes of dev-clean")
    parser.add_argument("--test-minutes", type=float, default=15.0, help="minutes of test-clean")
    parser.add_argument("--eval-utterances", type=int, help="dev/test utterances instead of minutes (tests)")
    parser.add_argument("--vocab-size", type=int, help="BPE size (default: the config's)")
    parser.add_argument("--max-words", type=int, default=12,
                        help="cut sentences longer than this into clause-level phrases (0: whole sentences)")
    parser.add_argument("--utterance-seconds", default="1-6",
                        help="MIN-MAX target utterance length; short utterances let a small corpus align quickly")
    parser.add_argument("--max-minutes", type=float, default=40.0,
                        help="training wall-time budget (0 = none); with generation, preparation and decoding "
                             "the default run stays inside 45 minutes on 2 cores")
    parser.add_argument("--text-sources", default="austen",
                        help="sentence sources, comma-separated: austen (apt-get install r-cran-janeaustenr), "
                             "devil (apt-get install dict-devil), gcide "
                             "(apt-get install dict-gcide). Austen repeats her vocabulary most: see text.py")
    parser.add_argument("--stages", default="data,train,decode",
                        help="which stages to run, comma-separated: data (generate + prepare), train, decode")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--workers", type=int, default=2, help="processes for generation and features")
    parser.add_argument("--no-record", action="store_true", help="do not add the result row to BENCHMARKS.md")
    args = parser.parse_args(argv)
    stages = set(args.stages.split(","))
    if not stages or stages - {"data", "train", "decode"}:
        parser.error(f"--stages takes data, train and decode; got {args.stages!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    timings: dict[str, float] = {}

    start = time.time()
    from recipes.synthetic import generate

    gen_args = ["--out", str(args.work_dir / "corpus"), "--seed", str(args.seed), "--workers", str(args.workers),
                "--long-form", "0", "--text-sources", args.text_sources, "--max-words", str(args.max_words),
                "--utterance-seconds", args.utterance_seconds]
    train_parts: tuple[str, ...] = ("train-clean-100",)
    if args.train_utterances:
        gen_args += ["--train-utterances", str(args.train_utterances)]
    else:
        gen_args += ["--train-hours", str(args.train_hours)]
        if args.train_360_hours > 0:
            gen_args += ["--train-360-hours", str(args.train_360_hours)]
            train_parts += ("train-clean-360",)
    if args.eval_utterances:
        gen_args += ["--dev-utterances", str(args.eval_utterances), "--test-utterances", str(args.eval_utterances)]
    else:
        gen_args += ["--dev-minutes", str(args.dev_minutes), "--test-minutes", str(args.test_minutes)]
    config = load_config(args.config or ["recipes/librispeech/conf/cpu-small.yaml"], args.set)
    vocab = args.vocab_size or config.data.vocab_size
    prepared = args.work_dir / "prepared"
    if "data" in stages:
        report = generate.main(gen_args)
        train_hours = sum(r.seconds for r in report.splits if r.split.startswith("train")) / 3600
        timings["generate"] = time.time() - start
        start = time.time()
        prepare(PrepareConfig(output_dir=prepared, corpus_dir=args.work_dir / "corpus",
                              parts=(*train_parts, "dev-clean", "test-clean"), vocab_size=vocab,
                              num_jobs=args.workers))
        timings["prepare"] = time.time() - start
    else:
        train_hours = _train_hours(args.work_dir / "corpus")

    config = apply_overrides(config, {"exp_dir": str(args.exp_dir), "max_minutes": args.max_minutes,
                                      "data": {"data_dir": str(prepared), "vocab_size": vocab,
                                               "train_parts": list(train_parts)}})
    checkpoint = Path(config.exp_dir) / "final.pt"
    if "train" in stages:
        start = time.time()
        checkpoint = Trainer(config).train()
        timings["train"] = time.time() - start
        if not args.no_record:
            record_throughput(checkpoint, config, args.config, train_hours)
    if "decode" not in stages:
        log.info("done: %s", ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
        return

    start = time.time()
    results = evaluate_module.main(["--checkpoint", str(checkpoint), "--data-dir", str(prepared), "--parts",
                                    "test-clean", "--methods", "greedy", "--chunks", "8", "-1",
                                    "--device", "cuda" if torch.cuda.is_available() else "cpu"])
    timings["decode"] = time.time() - start
    summary = ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
    log.info("done: %s; total %.1f min; results in %s (and wer.png; training curves in train_log.png)", summary,
             sum(timings.values()) / 60, args.exp_dir / "wer.md")
    if not args.no_record and stages == {"data", "train", "decode"}:  # the row times the whole pipeline
        record_row(checkpoint, results, timings, f"{train_hours:.2f}")


def record_throughput(checkpoint: Path, config, configs: list[str] | None, train_hours: float) -> None:
    """A row of training speed: seconds of audio trained per second of wall time (the mean over
    the last logged rows, past the start-up), with the model, device and batch size."""
    from asr.checkpoint import load_checkpoint
    from asr.plots import read_training_log
    from bench.report import record

    try:
        training = read_training_log(Path(config.exp_dir) / "train_log.csv")
    except (FileNotFoundError, ValueError):  # no row logged yet: nothing to record
        return
    speeds = training.columns["audio_seconds_per_second"]
    tail = speeds[len(speeds) // 2 :]
    speed = sum(tail) / len(tail)
    ckpt = load_checkpoint(checkpoint)
    params = sum(p.numel() for p in ckpt.model.parameters()) / 1e6
    merge = config.model.encoder.merge
    granularities = len(merge.granularities) if merge.layers else 1
    record(
        "Training throughput",
        ["config", "params", "granularities per batch", "batch (s of audio)", "train data", "steps", "audio s/s"],
        [[" + ".join(Path(c).stem for c in configs or ["cpu-small"]), f"{params:.1f}M", str(granularities),
          f"{config.data.max_duration:g}", f"{train_hours:.2f} h synthetic", str(int(training.steps[-1])),
          f"{speed:.0f}"]],
        note="Seconds of audio trained per second of wall time, the mean over the second half of the run "
             "(one process; bf16 autocast on GPU). A Matryoshka model trains every granularity on each batch.",
    )


def _train_hours(corpus: Path) -> float:
    """Hours of training speech in a generated corpus, from its splits' completion markers."""
    import json

    seconds = 0.0
    for marker in (corpus / "LibriSpeech").glob("train-*/.completed"):
        seconds += json.loads(marker.read_text()).get("seconds", 0.0)
    return seconds / 3600


def record_row(checkpoint: Path, results, timings: dict[str, float], train_size) -> None:
    from asr.checkpoint import load_checkpoint
    from bench.report import record

    ckpt = load_checkpoint(checkpoint)
    params = sum(p.numel() for p in ckpt.model.parameters()) / 1e6
    wer = {r.setting: f"{r.wer:.2f}" for r in results}
    record(
        "Synthetic LibriSpeech recipe: prepare -> train -> decode",
        ["train data", "params", "steps (epochs)", "prepare+train+decode min", "test-clean WER streaming 320 ms",
         "test-clean WER offline"],
        [[f"{train_size} h synthetic", f"{params:.1f}M", f"{ckpt.meta['steps']} ({ckpt.meta['epochs']})",
          f"{sum(timings.get(k, 0.0) for k in ('prepare', 'train', 'decode')) / 60:.1f}",
          wer.get("greedy-chunk320ms", "-"), wer.get("greedy-offline", "-")]],
        note="Greedy search; test speakers' voices and test sentences are never seen in training.",
    )


if __name__ == "__main__":
    main()
