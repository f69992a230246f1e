"""The evaluator's WER per speaking-rate third, and decoding a merging model with other merge settings."""
import argparse
import re

import pytest
import torch

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.config import MergeConfig
from asr.evaluate import UtteranceScore, override_merge, parse_merge, rate_thirds
from asr.evaluate import main as evaluate_main
from asr.model import Transducer
from asr.plots import read_wer_table
from asr.tokenizer import Tokenizer
from recipes.synthetic.espeak import espeak_available
from tests.conftest import small_config
from tests.prepared_data import make_prepared_dir


def test_rate_thirds_sort_by_rate_and_score_each_third_alone():
    # Given out of order: rates 1..7, the fastest utterances carry the errors.
    scores = [UtteranceScore(rate=r, words=10, errors=e)
              for r, e in [(7.0, 5), (1.0, 0), (4.0, 1), (2.0, 0), (6.0, 4), (3.0, 1), (5.0, 2)]]
    thirds = rate_thirds(scores)
    assert thirds is not None
    # 7 utterances: 2 slow (1, 2), 2 middle (3, 4), and the last third takes the remainder (5, 6, 7).
    assert thirds.edges == (3.0, 5.0)
    assert thirds.wer == pytest.approx((0.0, 10.0, 100.0 * 11 / 30))
    assert str(thirds) == "0.00 / 10.00 / 36.67"


def test_rate_thirds_weigh_utterances_by_their_words():
    scores = [UtteranceScore(1.0, 1, 1), UtteranceScore(1.5, 99, 0), UtteranceScore(2.0, 4, 0),
              UtteranceScore(2.5, 4, 0), UtteranceScore(3.0, 2, 2), UtteranceScore(3.5, 2, 0)]
    assert rate_thirds(scores).wer == pytest.approx((1.0, 0.0, 50.0))  # a pooled WER, not a mean of WERs


def test_too_few_utterances_have_no_thirds():
    assert rate_thirds([UtteranceScore(1.0, 3, 0), UtteranceScore(2.0, 3, 1)]) is None
    assert rate_thirds([]) is None


def _merging_model(mode="ratio", values=(0.0, 0.2, 0.4)) -> Transducer:
    merge = MergeConfig(layers=(1,), mode=mode, granularities=("full", "fine", "coarse"), values=values,
                        loss_weights=(1.0, 1.0, 1.0))
    return Transducer(small_config(num_layers=3, merge=merge)).eval()


def test_merge_override_decodes_a_ratio_model_in_threshold_mode():
    model = _merging_model()
    x, lens = torch.randn(2, 160, 80), torch.tensor([160, 120])
    before = model.encoder(x, lens, granularity="coarse")
    assert before.out_lens.sum() < before.frame_lens.sum()  # ratio 0.4 merges
    override_merge(model, *parse_merge("threshold:1.0,1.0,1.0"))
    assert model.encoder.config.merge.mode == "threshold"
    after = model.encoder(x, lens, granularity="coarse")
    assert torch.equal(after.out_lens, after.frame_lens)  # threshold 1.0 merges nothing
    override_merge(model, *parse_merge("threshold:1.0,0.5,-1.0"))  # -1: every pair is similar enough
    merged = model.encoder(x, lens, granularity="coarse")
    assert merged.out_lens.sum() < after.out_lens.sum()


@pytest.mark.parametrize("text, message", [
    ("threshold:1.0,0.9", "one entry per granularity ['full', 'fine', 'coarse']"),
    ("ratio:0,0.2,0.7", "merge ratio of granularity 'coarse' must be in [0, 0.5]"),
    ("threshold:1.0,0.9,1.5", "must be a cosine in [-1, 1]"),
])
def test_bad_merge_overrides_are_named(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        override_merge(_merging_model(), *parse_merge(text))


@pytest.mark.parametrize("text", ["median:1.0,0.9", "threshold:", "threshold:high"])
def test_unparsable_merge_overrides_say_the_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--merge"):
        parse_merge(text)


def test_merge_override_needs_a_merging_model():
    model = Transducer(small_config(num_layers=2)).eval()
    with pytest.raises(ValueError, match="no merge modules"):
        override_merge(model, "threshold", (1.0,))


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (make test installs it)")
def test_evaluate_with_a_merge_override_writes_beside_and_leaves_the_checkpoint_alone(tmp_path):
    layout = make_prepared_dir(tmp_path / "data", {"test-clean": 3}, vocab_size=40)
    merge = MergeConfig(layers=(1,), mode="ratio", granularities=("full", "coarse"), values=(0.0, 0.4),
                        loss_weights=(1.0, 1.0))
    checkpoint = tmp_path / "exp" / "final.pt"
    checkpoint.parent.mkdir()
    save_checkpoint(checkpoint, Transducer(small_config(vocab_size=40, num_layers=2, merge=merge)).eval(),
                    Tokenizer.from_file(layout.bpe_model))
    args = ["--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--parts", "test-clean",
            "--chunks", "-1", "--granularities", "all"]
    trained = evaluate_main(args)
    assert [r.setting for r in trained] == ["greedy-offline-full", "greedy-offline-coarse"]
    assert trained[1].tokens_kept < 0.8 and trained[1].by_rate is not None  # 3 utterances: one per third
    meta = load_checkpoint(checkpoint).meta
    table = (checkpoint.parent / "wer.md").read_text()
    read_back = read_wer_table(checkpoint.parent)  # the table's reader (asr.plots) sees what was scored
    assert [(r.granularity, r.wer) for r in read_back] == [(r.setting.split("-")[-1], round(r.wer, 2)) for r in trained]
    assert (checkpoint.parent / "wer.png").read_bytes().startswith(b"\x89PNG")

    overridden = evaluate_main(args + ["--merge", "threshold:1.0,1.0"])
    assert overridden[1].tokens_kept == 1.0  # threshold 1.0 merges nothing
    assert "merging threshold [1.0, 1.0]" in (checkpoint.parent / "merge-threshold-1-1" / "wer.md").read_text()
    assert (checkpoint.parent / "wer.md").read_text() == table
    assert load_checkpoint(checkpoint).meta == meta
    with pytest.raises(ValueError, match="one entry per granularity"):
        evaluate_main(args + ["--merge", "threshold:1.0"])
