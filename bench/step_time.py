"""CPU seconds per training step of a config, on real batches of a prepared corpus.

    python -m bench.step_time --data-dir data/synthetic/prepared                       # cpu-small
    python -m bench.step_time --data-dir D --set model.encoder.num_layers=6 --threads 2

The CPU recipe trains for a fixed wall time, so a variant that costs more per step gets fewer
steps. A GPU ablation of the CPU recipe (bench/recipe_ablation.py with `cpu_matched: true`) uses
these figures to give each variant the steps it would get on the CPU in the same time. Times
whole optimiser steps (forward, losses, backward, clipping, AdamW) on the first batches of epoch
0 after a few warm-up steps; data loading is not counted. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="prepared corpus (recipes.librispeech.prepare output)")
    parser.add_argument("--config", action="append",
                        help="training config (YAML), repeatable (default: recipes/librispeech/conf/cpu-small.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (this machine: 2 cores)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from asr.data.datamodule import load_cuts, train_dataloader
    from asr.train import Trainer, load_config

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as exp_dir:
        config = load_config(args.config or ["recipes/librispeech/conf/cpu-small.yaml"],
                             [*args.set, f"exp_dir={exp_dir}", f"data.data_dir={args.data_dir}", "device=cpu"])
        trainer = Trainer(config)
        loader = train_dataloader(load_cuts(config.data, config.data.train_parts), trainer.tokenizer, config.data,
                                  config.seed, 0)
        batches = list(itertools.islice(iter(loader), args.warmup + args.steps))
        if len(batches) < args.warmup + args.steps:
            raise SystemExit(f"the corpus gives only {len(batches)} batches; lower --steps/--warmup")
        for batch in batches[:args.warmup]:
            trainer.train_step(batch)
        started, audio = time.perf_counter(), 0.0
        for batch in batches[args.warmup:]:
            trainer.train_step(batch)
            audio += batch.seconds
        elapsed = time.perf_counter() - started
    result = {"seconds_per_step": elapsed / args.steps, "audio_seconds_per_second": audio / elapsed,
              "threads": args.threads, "set": args.set,
              "params_millions": sum(p.numel() for p in trainer.model.parameters()) / 1e6}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
