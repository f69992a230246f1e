"""The recipe end to end at toy scale: generate a few utterances -> prepare (lhotse manifests,
features, BPE) -> train a few steps -> decode -> WER table, through the same command users run."""
import re

import pytest
import torch

from asr.checkpoint import load_checkpoint
from bench import step_time
from recipes.synthetic import diagnose, run
from recipes.synthetic.espeak import espeak_available

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (make test installs it)")


def test_generate_prepare_train_decode_at_toy_scale(tmp_path):
    work, exp = tmp_path / "work", tmp_path / "exp"
    run.main(["--work-dir", str(work), "--exp-dir", str(exp), "--config", "recipes/librispeech/conf/tiny.yaml",
              "--train-utterances", "10", "--eval-utterances", "3", "--max-minutes", "0", "--no-record"])
    assert (work / "corpus" / "LibriSpeech" / "train-clean-100").is_dir()
    assert (work / "prepared" / "fbank" / "cuts_test-clean.jsonl.gz").exists()
    table = (exp / "wer.md").read_text()
    rows = re.findall(r"\| test-clean \| (greedy-\S+) \| ([0-9.]+) \|", table)
    assert {name for name, _ in rows} == {"greedy-offline", "greedy-chunk320ms"}
    assert all(0.0 <= float(wer) <= 100.0 for _, wer in rows)
    # Each row is also scored per speaking-rate third (one utterance each here), cut as the note says.
    thirds = re.findall(r"\| (\d+\.\d\d) / (\d+\.\d\d) / (\d+\.\d\d) \|$", table, re.M)
    assert len(thirds) == 2 and all(0.0 <= float(w) <= 400.0 for row in thirds for w in row)
    assert "Speaking-rate thirds of test-clean: below" in table
    assert (exp / "errors-test-clean-greedy-chunk320ms.txt").read_text().count("\n") == 4  # header + 3 utts
    ckpt = load_checkpoint(exp / "final.pt")
    assert set(ckpt.meta["wer"]) == {"test-clean/greedy-offline", "test-clean/greedy-chunk320ms"}
    assert ckpt.meta["steps"] > 0
    # --stages runs a part of the pipeline: decoding again neither regenerates nor retrains.
    (exp / "wer.md").unlink()
    saved = {p.name: p.stat().st_mtime_ns for p in (exp / "checkpoints").iterdir()}
    run.main(["--work-dir", str(work), "--exp-dir", str(exp), "--config", "recipes/librispeech/conf/tiny.yaml",
              "--train-utterances", "10", "--eval-utterances", "3", "--stages", "decode", "--no-record"])
    again = load_checkpoint(exp / "final.pt")  # the evaluator rewrites its metadata, not its weights
    assert (exp / "wer.md").exists() and again.meta["steps"] == ckpt.meta["steps"]
    assert {p.name: p.stat().st_mtime_ns for p in (exp / "checkpoints").iterdir()} == saved  # no training
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), ckpt.model.state_dict().values()))
    with pytest.raises(SystemExit):
        run.main(["--work-dir", str(work), "--stages", "train,evaluate"])
    # The CPU step timer behind CPU-matched ablations trains on the same prepared corpus.
    timing = step_time.main(["--data-dir", str(work / "prepared"), "--config", "recipes/librispeech/conf/tiny.yaml",
                             "--steps", "1", "--warmup", "0", "--threads", "1"])
    assert timing["seconds_per_step"] > 0 and timing["audio_seconds_per_second"] > 0
    assert timing["params_millions"] == pytest.approx(sum(p.numel() for p in ckpt.model.parameters()) / 1e6)
    # The voice/text diagnosis speaks and decodes four small sets with the recipe's model.
    cells = diagnose.main(["--checkpoint", str(exp / "final.pt"), "--work-dir", str(work), "--utterances", "2"])
    assert set(cells) == {(v, t) for v in ("training", "test") for t in ("training", "test")}
    assert all(0.0 <= wer <= 400.0 for wer in cells.values())
