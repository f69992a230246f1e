"""Recipe ablations at a fixed step count, run side by side, with one WER table at the end.

    python -m bench.recipe_ablation bench/ablations/cpu-small.yaml --parallel 6

The YAML names a base config, the step count and the variants; each variant may change the corpus
(`work_dir`, `text_sources`), the BPE size and any config field (`set`, as `--set` takes them):

    base_config: recipes/librispeech/conf/cpu-small.yaml
    max_steps: 4846
    corpus: {train_hours: 6}
    variants:
      - {name: baseline, work_dir: data/synthetic6h}
      - {name: specaug-light, work_dir: data/synthetic6h, set: [data.spec_augment=true, data.spec_frame_masks=2]}

A fixed step count makes a GPU run of a CPU recipe a cheap proxy for the CPU run: same batches, same
schedule, same number of updates, minutes instead of the CPU's 36. With `cpu_matched: true` the step
count is the first variant's, and every other variant gets the steps it would make on the CPU in the
same time. The CPU seconds per step of each variant (bench/step_time.py, 2 threads) are read from
`<plan>.cpu-times.json`, and measured into it where missing (`--time-only` on the target CPU).
Every corpus is generated and prepared first (once per distinct corpus), then the variants train
and decode in parallel through `recipes.synthetic.run`, each in `<exp_root>/<name>`. The table
(greedy WER on test-clean, streaming at 320 ms and offline) is printed and recorded in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger("bench.recipe_ablation")


@dataclass(frozen=True)
class Variant:
    name: str
    work_dir: str
    text_sources: str = "austen"
    vocab_size: int = 0  # 0 = the config's
    train_hours: float = 0.0  # 0 = the plan's corpus setting
    sets: tuple[str, ...] = ()

    @property
    def corpus_key(self) -> tuple[str, str, int, float]:
        return self.work_dir, self.text_sources, self.vocab_size, self.train_hours


@dataclass
class Plan:
    base_config: str
    max_steps: int
    exp_root: Path
    corpus_args: list[str]
    variants: list[Variant] = field(default_factory=list)
    cpu_matched: bool = False


def load_plan(path: Path, exp_root: Path | None) -> Plan:
    spec = yaml.safe_load(path.read_text())
    unknown = set(spec) - {"base_config", "max_steps", "exp_root", "corpus", "variants", "cpu_matched"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    corpus_args = []
    for key, value in (spec.get("corpus") or {}).items():
        corpus_args += [f"--{key.replace('_', '-')}", str(value)]
    variants = []
    for item in spec["variants"]:
        extra = set(item) - {"name", "work_dir", "text_sources", "vocab_size", "train_hours", "set"}
        if extra:
            raise ValueError(f"{path}: variant {item.get('name')!r} has unknown keys {sorted(extra)}")
        variants.append(Variant(item["name"], item["work_dir"], item.get("text_sources", "austen"),
                                int(item.get("vocab_size", 0)), float(item.get("train_hours", 0)),
                                tuple(item.get("set", ()))))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: variant names repeat: {names}")
    return Plan(spec["base_config"], int(spec["max_steps"]), exp_root or Path(spec.get("exp_root", "exp/ablation")),
                corpus_args, variants, bool(spec.get("cpu_matched", False)))


def cpu_step_seconds(variant: Variant, plan: Plan, threads: int = 2) -> float:
    """The variant's CPU seconds per training step (bench/step_time.py, in a process of its own)."""
    command = [sys.executable, "-m", "bench.step_time", "--data-dir", str(Path(variant.work_dir) / "prepared"),
               "--config", plan.base_config, "--threads", str(threads)]
    for assignment in variant.sets + ((f"data.vocab_size={variant.vocab_size}",) if variant.vocab_size else ()):
        command += ["--set", assignment]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["seconds_per_step"])


def matched_steps(plan: Plan, step_seconds: dict[str, float], variants: list[Variant]) -> dict[str, int]:
    """Each variant's steps in the CPU time the plan's first variant takes for `max_steps`."""
    budget = plan.max_steps * step_seconds[plan.variants[0].name]
    return {v.name: max(1, round(budget / step_seconds[v.name])) for v in variants}


def run_command(variant: Variant, plan: Plan, stages: str, workers: int, steps: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "recipes.synthetic.run", "--work-dir", variant.work_dir,
               "--exp-dir", str(plan.exp_root / variant.name), "--config", plan.base_config,
               "--text-sources", variant.text_sources, "--stages", stages, "--max-minutes", "0",
               "--workers", str(workers), "--no-record", "--set", f"max_steps={steps or plan.max_steps}",
               *plan.corpus_args]
    if variant.vocab_size:
        command += ["--vocab-size", str(variant.vocab_size)]
    if variant.train_hours:
        command += ["--train-hours", str(variant.train_hours)]
    for assignment in variant.sets:
        command += ["--set", assignment]
    return command


def read_wer(exp_dir: Path) -> dict[str, str]:
    """{setting: WER} from the evaluator's wer.md beside the checkpoint."""
    wer = {}
    table = exp_dir / "wer.md"
    if table.exists():
        for line in table.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) > 2 and cells[1].startswith("greedy"):
                wer[cells[1]] = cells[2]
    return wer


def read_training(exp_dir: Path) -> tuple[str, str, str]:
    """(steps, training minutes, audio seconds per second) from the last row of the CSV log."""
    log_file = exp_dir / "train_log.csv"
    if not log_file.exists():
        return "-", "-", "-"
    rows = list(csv.DictReader(log_file.open()))
    if not rows:
        return "-", "-", "-"
    last = rows[-1]
    speed = sum(float(r["audio_seconds_per_second"]) for r in rows[-10:]) / len(rows[-10:])
    return last["step"], f"{float(last['elapsed_minutes']):.1f}", f"{speed:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", type=Path, help="YAML file naming the base config, step count and variants")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants")
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at once")
    parser.add_argument("--workers", type=int, default=2, help="processes for corpus generation and features")
    parser.add_argument("--exp-root", type=Path, help="where each variant's exp dir goes (default: the plan's)")
    parser.add_argument("--no-record", action="store_true", help="do not add the rows to BENCHMARKS.md")
    parser.add_argument("--time-only", action="store_true",
                        help="with cpu_matched: make the corpora, time the variants' CPU steps into "
                             "<plan>.cpu-times.json, and stop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = load_plan(args.plan, args.exp_root)
    if args.time_only and not plan.cpu_matched:
        parser.error(f"--time-only times CPU steps for cpu_matched plans; {args.plan} is not one")
    variants = [v for v in plan.variants if not args.only or v.name in args.only]
    if args.only and len(variants) != len(args.only):
        parser.error(f"unknown variant(s) in --only; the plan has {[v.name for v in plan.variants]}")

    started = time.time()
    for key in dict.fromkeys(v.corpus_key for v in variants):
        first = next(v for v in variants if v.corpus_key == key)
        log.info("corpus %s (text %s, vocab %s, train hours %s)", *key)
        subprocess.run(run_command(first, plan, "data", args.workers), check=True)
    data_minutes = (time.time() - started) / 60
    steps = {v.name: plan.max_steps for v in variants}
    step_seconds: dict[str, float] = {}
    if plan.cpu_matched:
        # Timings are kept beside the plan: measured once on the CPU the recipe targets (--time-only
        # there), they travel with the repo to the GPU machine, which then times nothing itself.
        times_file = args.plan.with_suffix(".cpu-times.json")
        step_seconds = json.loads(times_file.read_text()) if times_file.exists() else {}
        for variant in plan.variants:  # the first variant of the plan sets the CPU time, even under --only
            if (variant is plan.variants[0] or variant in variants) and variant.name not in step_seconds:
                step_seconds[variant.name] = round(cpu_step_seconds(variant, plan), 4)
                log.info("%s: %.3f CPU s/step", variant.name, step_seconds[variant.name])
                times_file.write_text(json.dumps(step_seconds, indent=1) + "\n")
        if args.time_only:
            return 0
        steps = matched_steps(plan, step_seconds, variants)
        log.info("CPU-matched steps: %s", steps)

    pending = list(variants)
    running: list[tuple[Variant, subprocess.Popen, Path]] = []
    failed = []
    while pending or running:
        while pending and len(running) < args.parallel:
            variant = pending.pop(0)
            out = plan.exp_root / variant.name
            out.mkdir(parents=True, exist_ok=True)
            log_path = out / "ablation.log"
            log.info("start %s: %s", variant.name, " ".join(variant.sets) or "(base)")
            process = subprocess.Popen(run_command(variant, plan, "train,decode", args.workers, steps[variant.name]),
                                       stdout=log_path.open("w"), stderr=subprocess.STDOUT)
            running.append((variant, process, log_path))
        time.sleep(2)
        for item in list(running):
            variant, process, log_path = item
            if process.poll() is not None:
                running.remove(item)
                if process.returncode:
                    failed.append(variant.name)
                    tail = log_path.read_text().splitlines()[-15:]
                    log.error("%s failed (exit %d):\n%s", variant.name, process.returncode, "\n".join(tail))
                else:
                    log.info("%s done", variant.name)

    rows = []
    for variant in variants:
        exp_dir = plan.exp_root / variant.name
        wer = read_wer(exp_dir)
        steps_done, minutes, speed = read_training(exp_dir)
        corpus = f"{Path(variant.work_dir).name} ({variant.text_sources})"
        changes = " ".join(variant.sets) + (f" vocab={variant.vocab_size}" if variant.vocab_size else "") + (
            f" train_hours={variant.train_hours:g}" if variant.train_hours else "")
        cpu = f"{step_seconds[variant.name]:.3f}" if variant.name in step_seconds else "-"
        rows.append([variant.name, corpus, changes.strip() or "-", cpu, steps_done, minutes, speed,
                     wer.get("greedy-chunk320ms", "-"), wer.get("greedy-offline", "-")])
    columns = ["variant", "corpus", "changes", "CPU s/step (2 threads)", "steps", "train min", "audio s/s",
               "WER streaming 320 ms", "WER offline"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    log.info("corpora %.1f min, total %.1f min", data_minutes, (time.time() - started) / 60)
    if not args.no_record:
        from bench.report import record

        if plan.cpu_matched:
            title = (f"Recipe ablations ({Path(plan.base_config).stem}, CPU-time matched to "
                     f"{plan.max_steps} steps of {plan.variants[0].name})")
            note = ("Greedy search on synthetic test-clean (unseen voices and sentences). Each variant "
                    "trains the steps it would make on 2 CPU threads in the time the first makes its steps.")
        else:
            title = f"Recipe ablations ({Path(plan.base_config).stem}, {plan.max_steps} steps each)"
            note = ("Greedy search on synthetic test-clean (unseen voices and sentences). Every variant "
                    "trains the same number of steps on the same batches as far as its change allows.")
        record(title, columns, rows, note=note)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
