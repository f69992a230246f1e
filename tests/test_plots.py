import logging
import math

import pytest

from asr.plots import (main, plot_training, plot_wer, read_training_log, read_wer_table, redraw_quietly,
                       smooth)
from asr.train import CsvLog

PNG = b"\x89PNG\r\n\x1a\n"

WER_MD = """# WER of final.pt

| test set | decoding | WER % | sub | del | ins | words | utterances | tokens kept | WER slow / mid / fast third |
|---|---|---|---|---|---|---|---|---|---|
| test-clean | greedy-chunk320ms-full | 12.02 | 234 | 55 | 27 | 2628 | 218 | 100% | 10.22 / 11.40 / 14.25 |
| test-clean | greedy-chunk320ms-coarse | 14.42 | 260 | 87 | 32 | 2628 | 218 | 37% | 9.05 / 16.33 / 17.60 |
| test-clean | greedy-offline-full | 10.50 | 203 | 52 | 21 | 2628 | 218 | 100% | 7.76 / 11.40 / 12.20 |
| test-clean | greedy-offline-coarse | 12.71 | 231 | 75 | 28 | 2628 | 218 | 36% | 8.93 / 11.52 / 17.28 |

Speaking-rate thirds of test-clean: below 6.2, 6.2 to 7.3, and from 7.3 reference BPE tokens per second.
"""

# A table from before the kept and speaking-rate columns, of a model without granularities.
OLD_WER_MD = """| test set | decoding | WER % | sub | del | ins | words | utterances |
|---|---|---|---|---|---|---|---|
| test-clean | beam-chunk320ms | 14.35 | 1 | 2 | 3 | 100 | 10 |
"""


def _merging_log(path, steps=range(20, 201, 20)):
    log = CsvLog(path / "train_log.csv")
    for step in steps:
        log.write(step=step, epoch=0, loss=1.0 / step, pruned_full=0.5 / step, pruned_coarse=0.7 / step,
                  kept_full=1.0, kept_coarse=0.37, lr=1e-3, audio_seconds_per_second=90.0, elapsed_minutes=0.1)


def test_a_resumed_log_keeps_the_later_row_of_a_repeated_step(tmp_path):
    _merging_log(tmp_path, steps=[20, 40, 60])
    _merging_log(tmp_path, steps=[40])  # resumed from the step-20 checkpoint: step 40 again, other figures
    log = read_training_log(tmp_path)
    assert log.steps == [20.0, 40.0, 60.0]
    assert log.columns["loss"][1] == pytest.approx(1 / 40) and log.name == tmp_path.name
    assert log.granularities("pruned") == ["full", "coarse"] and log.granularities("kept") == ["full", "coarse"]


def test_an_unusable_training_log_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training log at"):
        read_training_log(tmp_path)
    (tmp_path / "train_log.csv").write_text("step,loss\n")
    with pytest.raises(ValueError, match="no rows yet"):
        read_training_log(tmp_path)
    (tmp_path / "train_log.csv").write_text("loss\n0.5\n")
    with pytest.raises(ValueError, match="no 'step' column"):
        read_training_log(tmp_path)


def test_smoothing_is_a_trailing_mean_that_skips_gaps():
    assert smooth([1.0, 3.0, math.nan, 5.0], window=2) == [1.0, 2.0, 3.0, 5.0]
    assert smooth([4.0, 2.0], window=1) == [4.0, 2.0]


def test_training_pictures_are_drawn_with_and_without_merging(tmp_path):
    _merging_log(tmp_path)
    out = plot_training([read_training_log(tmp_path)], tmp_path / "curves.png")
    assert out.read_bytes().startswith(PNG)
    plain = tmp_path / "plain"
    plain.mkdir()
    CsvLog(plain / "train_log.csv").write(step=1, epoch=0, loss=0.5, simple=0.4, pruned=0.1, ctc=0.2, lr=1e-3)
    svg = plot_training([read_training_log(plain), read_training_log(tmp_path)], tmp_path / "both.svg")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "no merging in this run" not in text  # the second run merges
    alone = plot_training([read_training_log(plain)], tmp_path / "alone.svg").read_text()
    assert "no merging in this run" in alone


def test_the_wer_table_is_read_back_by_its_header(tmp_path):
    (tmp_path / "wer.md").write_text(WER_MD)
    rows = read_wer_table(tmp_path)
    assert [(r.mode, r.granularity, r.wer, r.kept) for r in rows] == [
        ("chunk320ms", "full", 12.02, 1.0), ("chunk320ms", "coarse", 14.42, 0.37),
        ("offline", "full", 10.5, 1.0), ("offline", "coarse", 12.71, 0.36)]
    assert rows[3].thirds == (8.93, 11.52, 17.28) and rows[3].decoding == "greedy offline"
    (tmp_path / "old.md").write_text(OLD_WER_MD)
    old = read_wer_table(tmp_path / "old.md")
    assert [(r.method, r.mode, r.granularity, r.kept, r.thirds) for r in old] == [
        ("beam", "chunk320ms", "", None, None)]


def test_a_file_that_is_not_a_wer_table_is_named(tmp_path):
    (tmp_path / "wer.md").write_text("# nothing here\n")
    with pytest.raises(ValueError, match="holds no WER table"):
        read_wer_table(tmp_path)
    (tmp_path / "wer.md").write_text(WER_MD.replace("greedy-offline-full", "greedy-sideways-full"))
    with pytest.raises(ValueError, match="greedy-sideways-full"):
        read_wer_table(tmp_path)


def test_wer_pictures_for_one_run_and_for_several(tmp_path):
    (tmp_path / "wer.md").write_text(WER_MD)
    (tmp_path / "old.md").write_text(OLD_WER_MD)
    rows = read_wer_table(tmp_path)
    one = plot_wer([("run", rows)], tmp_path / "one.svg").read_text()
    assert "WER by speaking rate (greedy offline)" in one  # the offline rows are the ones sliced by rate
    assert plot_wer([("old", read_wer_table(tmp_path / "old.md"))], tmp_path / "old.png").read_bytes().startswith(PNG)
    several = plot_wer([("2k", rows), ("4k", rows[:2])], tmp_path / "runs.svg").read_text()
    assert "greedy chunk320ms" in several and "greedy offline" in several
    coarse_only = [r for r in rows if r.granularity == "coarse"]
    families = plot_wer([("2k", rows), ("4k", rows), ("2k", coarse_only), ("4k", coarse_only)], tmp_path / "f.svg",
                        groups=["matryoshka", "matryoshka", "coarse-only", "coarse-only"]).read_text()
    assert "coarse (coarse-only)" in families and "full (matryoshka)" in families
    assert "full (coarse-only)" not in families  # a family has only the granularities it was decoded at
    with pytest.raises(ValueError, match="1 groups for 2 runs"):
        plot_wer([("2k", rows), ("4k", rows)], tmp_path / "g.svg", groups=["matryoshka"])
    with pytest.raises(ValueError, match="no WER rows"):
        plot_wer([("empty", [])], tmp_path / "none.png")


def test_a_picture_that_cannot_be_drawn_is_logged_not_raised(tmp_path, caplog):
    def broken():
        raise RuntimeError("no fonts")

    with caplog.at_level(logging.WARNING, logger="asr.plots"):
        assert redraw_quietly(tmp_path / "x.png", broken) is None
    assert "could not draw" in caplog.text and "no fonts" in caplog.text


def test_command_line_defaults_to_the_run_folder_and_refuses_ambiguity(tmp_path, capsys):
    _merging_log(tmp_path)
    (tmp_path / "wer.md").write_text(WER_MD)
    assert main(["training", str(tmp_path)]) == tmp_path / "train_log.png"
    assert main(["wer", str(tmp_path)]).read_bytes().startswith(PNG)
    with pytest.raises(SystemExit) as exit_info:
        main(["wer", str(tmp_path), str(tmp_path)])
    assert exit_info.value.code == 2 and "several runs need --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["wer", str(tmp_path), "--labels", "a", "b", "-o", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2 and "--labels names 2 runs but 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["training", str(tmp_path), "--groups", "a"])
    assert exit_info.value.code == 2 and "--groups is for 'wer'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["training", str(tmp_path / "missing")])
    assert exit_info.value.code == 1 and "no training log at" in capsys.readouterr().err
