"""bench/load.py drives a real server process with paced clients and reports a row per level."""
import soundfile as sf

from asr.checkpoint import save_checkpoint
from bench import load
from tests.server.conftest import audio


def test_load_benchmark_reports_latency_and_real_time_per_level(tmp_path, recognizer):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, recognizer.model, recognizer.tokenizer)
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        sf.write(clips / f"{i}.wav", audio(1.0, seed=i), 16000)
    rows = load.main(["--model", str(checkpoint), "--audio-dir", str(clips), "--clients", "1", "2",
                      "--granularities", "coarse", "--seconds", "1.5", "--max-latency", "5", "--no-record"])
    assert [(r[2], r[3]) for r in rows] == [("coarse", "1"), ("coarse", "2")]
    for row in rows:
        p50, p95, p99 = map(float, row[4:7])
        assert 0 < p50 <= p95 <= p99 < 5000
        assert row[10] == "coarse 100%" and row[11] == "yes"
