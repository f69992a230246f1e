"""bench/recipe_ablation.py: a plan file becomes one recipe command per variant, bad plans are
refused with the offending key, and results are read back from the evaluator's table."""
from pathlib import Path

import pytest

from bench.recipe_ablation import load_plan, matched_steps, read_wer, run_command

PLAN = """
base_config: recipes/librispeech/conf/cpu-small.yaml
max_steps: 100
corpus: {train_hours: 6}
variants:
  - {name: base, work_dir: data/a}
  - {name: bigger-bpe, work_dir: data/b, vocab_size: 500, train_hours: 12, set: [data.spec_augment=true]}
"""


def test_plan_becomes_recipe_commands(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    plan = load_plan(path, tmp_path / "exp")
    base, bigger = plan.variants
    command = run_command(bigger, plan, "train,decode", 4)
    assert command[command.index("--exp-dir") + 1] == str(tmp_path / "exp" / "bigger-bpe")
    assert command[command.index("--stages") + 1] == "train,decode"
    assert "max_steps=100" in command and "data.spec_augment=true" in command
    assert command[command.index("--vocab-size") + 1] == "500"
    # The variant's corpus size comes after the plan's, so it wins.
    hours = [command[i + 1] for i, a in enumerate(command) if a == "--train-hours"]
    assert hours == ["6", "12.0"]
    assert base.corpus_key != bigger.corpus_key
    assert "--vocab-size" not in run_command(base, plan, "data", 2)


@pytest.mark.parametrize("bad, message", [
    ("max_step: 3", "unknown keys"),
    ("variants:\n  - {name: a, work_dir: x, lr: 1}", "unknown keys"),
    ("variants:\n  - {name: a, work_dir: x}\n  - {name: a, work_dir: y}", "repeat"),
])
def test_bad_plans_are_refused(tmp_path, bad, message):
    path = tmp_path / "plan.yaml"
    base = "base_config: c.yaml\nmax_steps: 1\n"
    path.write_text(base + bad if bad.startswith("variants") else base + bad + "\nvariants: []\n")
    with pytest.raises(ValueError, match=message):
        load_plan(path, None)


def test_read_wer_from_the_evaluator_table(tmp_path):
    (tmp_path / "wer.md").write_text(
        "# WER\n\n| test set | decoding | WER % | sub |\n|---|---|---|---|\n"
        "| test-clean | greedy-chunk320ms | 33.95 | 5 |\n| test-clean | greedy-offline | 29.95 | 4 |\n")
    assert read_wer(tmp_path) == {"greedy-chunk320ms": "33.95", "greedy-offline": "29.95"}
    assert read_wer(Path(tmp_path / "missing")) == {}


def test_cpu_matched_plans_give_slower_variants_fewer_steps(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("max_steps: 100", "max_steps: 100\ncpu_matched: true"))
    plan = load_plan(path, None)
    assert plan.cpu_matched and not load_plan(_written(tmp_path / "p2.yaml", PLAN), None).cpu_matched
    steps = matched_steps(plan, {"base": 0.4, "bigger-bpe": 0.5}, plan.variants)
    assert steps == {"base": 100, "bigger-bpe": 80}
    # Under --only the first variant still sets the budget.
    assert matched_steps(plan, {"base": 0.4, "bigger-bpe": 0.8}, plan.variants[1:]) == {"bigger-bpe": 50}
    command = run_command(plan.variants[1], plan, "train,decode", 2, steps["bigger-bpe"])
    assert "max_steps=80" in command and "max_steps=100" not in command


def test_time_only_refuses_a_plan_that_is_not_cpu_matched(tmp_path):
    from bench.recipe_ablation import main

    with pytest.raises(SystemExit):  # before any corpus is made
        main([str(_written(tmp_path / "plan.yaml", PLAN)), "--time-only", "--exp-root", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
