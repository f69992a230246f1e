"""The whole recipe on the synthetic corpus, one command: generate -> prepare -> train -> decode.

    python -m recipes.synthetic.run                      # 2 h corpus, cpu-small model, ~45 min on 2 cores
    python -m recipes.synthetic.run --train-hours 100 --config recipes/librispeech/conf/gpu-medium.yaml

Every step is resumable: the corpus and the prepared data are skipped when complete, training
resumes from its last checkpoint. Prints the WER table and the time each step took.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from asr import evaluate as evaluate_module
from asr.config import apply_overrides
from asr.train import Trainer, load_config
from recipes.librispeech.prepare import PrepareConfig, prepare

log = logging.getLogger("recipes.synthetic.run")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("data/synthetic"), help="corpus and prepared data")
    parser.add_argument("--exp-dir", type=Path, default=Path("exp/synthetic-cpu-small"), help="checkpoints, logs, WER")
    parser.add_argument("--config", default="recipes/librispeech/conf/cpu-small.yaml", help="training config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one training config field (repeatable)")
    parser.add_argument("--train-hours", type=float, default=6.0, help="hours of synthetic training speech")
    parser.add_argument("--train-utterances", type=int, help="utterances instead of hours (tests)")
    parser.add_argument("--dev-minutes", type=float, default=8.0, help="minutes of dev-clean")
    parser.add_argument("--test-minutes", type=float, default=15.0, help="minutes of test-clean")
    parser.add_argument("--eval-utterances", type=int, help="dev/test utterances instead of minutes (tests)")
    parser.add_argument("--vocab-size", type=int, help="BPE size (default: the config's)")
    parser.add_argument("--max-words", type=int, default=12,
                        help="cut sentences longer than this into clause-level phrases (0: whole sentences)")
    parser.add_argument("--utterance-seconds", default="1-6",
                        help="MIN-MAX target utterance length; short utterances let a small corpus align quickly")
    parser.add_argument("--max-minutes", type=float, default=36.0, help="training wall-time budget (0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--workers", type=int, default=2, help="processes for generation and features")
    parser.add_argument("--no-record", action="store_true", help="do not add the result row to BENCHMARKS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    timings: dict[str, float] = {}

    start = time.time()
    from recipes.synthetic import generate

    gen_args = ["--out", str(args.work_dir / "corpus"), "--seed", str(args.seed), "--workers", str(args.workers),
                "--long-form", "0", "--max-words", str(args.max_words), "--utterance-seconds", args.utterance_seconds]
    if args.train_utterances:
        gen_args += ["--train-utterances", str(args.train_utterances)]
    else:
        gen_args += ["--train-hours", str(args.train_hours)]
    if args.eval_utterances:
        gen_args += ["--dev-utterances", str(args.eval_utterances), "--test-utterances", str(args.eval_utterances)]
    else:
        gen_args += ["--dev-minutes", str(args.dev_minutes), "--test-minutes", str(args.test_minutes)]
    report = generate.main(gen_args)
    train_hours = sum(r.seconds for r in report.splits if r.split.startswith("train")) / 3600
    timings["generate"] = time.time() - start

    config = load_config(args.config, args.set)
    vocab = args.vocab_size or config.data.vocab_size
    prepared = args.work_dir / "prepared"
    start = time.time()
    prepare(PrepareConfig(output_dir=prepared, corpus_dir=args.work_dir / "corpus", parts=("train-clean-100", "dev-clean", "test-clean"),
                          vocab_size=vocab, num_jobs=args.workers))
    timings["prepare"] = time.time() - start

    config = apply_overrides(config, {"exp_dir": str(args.exp_dir), "max_minutes": args.max_minutes,
                                      "data": {"data_dir": str(prepared), "vocab_size": vocab}})
    start = time.time()
    checkpoint = Trainer(config).train()
    timings["train"] = time.time() - start

    start = time.time()
    results = evaluate_module.main(["--checkpoint", str(checkpoint), "--data-dir", str(prepared), "--parts",
                                    "test-clean", "--methods", "greedy", "--chunks", "8", "-1"])
    timings["decode"] = time.time() - start
    summary = ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
    log.info("done: %s; total %.1f min; results in %s", summary, sum(timings.values()) / 60, args.exp_dir / "wer.md")
    if not args.no_record:
        record_row(checkpoint, results, timings, f"{train_hours:.2f}")


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
          f"{(timings['prepare'] + timings['train'] + timings['decode']) / 60:.1f}",
          wer.get("greedy-chunk320ms", "-"), wer.get("greedy-offline", "-")]],
        note="Greedy search; test speakers' voices and test sentences are never seen in training.",
    )


if __name__ == "__main__":
    main()
