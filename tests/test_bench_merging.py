"""bench/merging.py runs end to end on a tiny checkpoint: one row per granularity and mode, the
coarser granularities keeping fewer tokens, speed-ups measured against the finest; decoding side by
side in a batch gives the same words as decoding each utterance alone."""
import pytest

from asr.checkpoint import save_checkpoint
from asr.config import MergeConfig
from asr.model import Transducer
from asr.tokenizer import Tokenizer
from bench import merging
from recipes.synthetic.espeak import espeak_available
from tests.conftest import small_config
from tests.prepared_data import make_prepared_dir

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (make test installs it)")


def test_merging_benchmark_reports_every_granularity_and_mode(tmp_path):
    layout = make_prepared_dir(tmp_path / "data", {"test-clean": 4}, vocab_size=40)
    tokenizer = Tokenizer.from_file(layout.bpe_model)
    merge = MergeConfig(layers=(1,), mode="ratio", granularities=("full", "coarse"), values=(0.0, 0.4),
                        loss_weights=(1.0, 1.0))
    model = Transducer(small_config(vocab_size=40, num_layers=2, merge=merge)).eval()
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model, tokenizer)
    rows = merging.main(["--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"),
                         "--chunks", "-1", "8", "--batch-sizes", "1", "3", "--no-record"])
    settings = [("full", "offline"), ("coarse", "offline"), ("full", "stream 320 ms"), ("coarse", "stream 320 ms")]
    assert [(r[0], r[1], r[2]) for r in rows] == [(*s, b) for b in ("1", "3") for s in settings]
    kept = {(r[0], r[1], r[2]): float(r[3].rstrip("%")) for r in rows}
    assert kept[("full", "offline", "1")] == 100.0 and kept[("coarse", "offline", "1")] < 80.0
    assert kept[("coarse", "stream 320 ms", "1")] < 80.0
    assert all(r[9] == "1.00x" for r in rows if r[0] == "full")
    # Batch 3 pads utterances of different lengths (a last batch of 1): same tokens, same errors.
    by_setting = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
    for name, mode in settings:
        assert by_setting[(name, mode, "3")] == by_setting[(name, mode, "1")]
    assert (tmp_path / "merging.png").read_bytes().startswith(b"\x89PNG")  # the trade-off, beside the checkpoint


def test_random_model_times_the_gpu_recipe_size_without_a_wer(tmp_path):
    make_prepared_dir(tmp_path / "data", {"test-clean": 2}, vocab_size=40)
    rows = merging.main(["--random-model", "--data-dir", str(tmp_path / "data"), "--chunks", "8", "--no-record",
                         "--plot", str(tmp_path / "random.svg")])
    assert [r[0] for r in rows] == ["full", "fine", "medium", "coarse"]
    assert all(r[4] == "n/a" for r in rows)  # random weights: no word error rate to speak of
    kept = [float(r[3].rstrip("%")) for r in rows]
    assert kept[0] == 100.0 and kept == sorted(kept, reverse=True) and kept[-1] < 50.0
    picture = (tmp_path / "random.svg").read_text()
    assert "what merging buys in time" in picture and "WER against speed-up" not in picture  # no WER to draw

