"""Waveform in, transcript out: streaming equals offline, checkpoints rebuild the model alone,
bad audio gets a clear error."""
import numpy as np
import pytest
import torch

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.config import StreamingConfig
from asr.decoding import ModifiedBeamSearch
from asr.model import Transducer
from asr.recognizer import Recognizer
from asr.tokenizer import train_tokenizer
from tests.conftest import small_config

TEXTS = ["HELLO WORLD", "STREAMING SPEECH RECOGNITION", "ADJACENT TOKEN MERGING", "A QUICK TEST OF THE TOKENIZER"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=30)


@pytest.fixture(scope="module")
def recognizer(tokenizer):
    torch.manual_seed(3)
    model = Transducer(small_config(vocab_size=tokenizer.vocab_size))
    return Recognizer(model, tokenizer, streaming=StreamingConfig(chunk_size=4, left_context=16))


def _audio(seconds=2.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("piece", [160, 1234, 8000])
def test_stream_of_any_piece_size_equals_offline_chunked_decode(recognizer, piece):
    audio = _audio()
    stream = recognizer.stream()
    partial_lengths = []
    for start in range(0, audio.size, piece):
        partial_lengths.append(len(stream.accept_waveform(audio[start : start + piece], 16000).tokens))
    final = stream.finish()
    offline = recognizer.transcribe(audio, 16000, full_context=False)
    assert final.tokens, "random model emits tokens; otherwise the comparison proves nothing"
    assert final.text == offline.text
    assert [t.token_id for t in final.tokens] == [t.token_id for t in offline.tokens]
    assert partial_lengths == sorted(partial_lengths)  # partial results only grow


def test_token_times_are_monotone_and_inside_the_audio(recognizer):
    audio = _audio(1.7)
    result = recognizer.transcribe(audio, 16000)
    starts = [t.start for t in result.tokens]
    assert starts == sorted(starts)
    assert all(0 <= t.start < t.end <= audio.size / 16000 + 0.04 for t in result.tokens)


def test_checkpoint_alone_rebuilds_model_and_tokenizer(tmp_path, recognizer, tokenizer):
    save_checkpoint(tmp_path / "m.pt", recognizer.model, tokenizer, {"wer": 12.5})
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.meta == {"wer": 12.5}
    assert ckpt.model.config == recognizer.model.config
    assert ckpt.tokenizer.encode("HELLO WORLD") == tokenizer.encode("HELLO WORLD")
    audio = _audio(1.0, seed=5)
    reloaded = Recognizer(ckpt.model, ckpt.tokenizer, streaming=recognizer.streaming)
    assert reloaded.transcribe(audio, 16000).text == recognizer.transcribe(audio, 16000).text


def test_loading_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_beam_search_recognizer_streams_like_offline(recognizer):
    beam = Recognizer(recognizer.model, recognizer.tokenizer, ModifiedBeamSearch(beam=4), recognizer.streaming)
    audio = _audio(1.5, seed=2)
    stream = beam.stream()
    stream.accept_waveform(audio, 16000)
    assert stream.finish().text == beam.transcribe(audio, 16000, full_context=False).text


@pytest.mark.parametrize(
    "audio,rate,match",
    [
        (np.zeros(16000, np.float32), 8000, "sample rate 8000 Hz"),
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.zeros(100, np.float32), 16000, "shorter than one 25 ms frame"),
        (np.full(16000, np.nan, np.float32), 16000, "NaN"),
        (np.zeros((2, 16000), np.float32), 16000, "mono"),
        (np.zeros(16000, np.uint8), 16000, "uint8"),
    ],
    ids=["rate", "empty", "too-short", "nan", "stereo", "dtype"],
)
def test_bad_audio_raises_a_clear_value_error(recognizer, audio, rate, match):
    with pytest.raises(ValueError, match=match):
        recognizer.transcribe(audio, rate)
    with pytest.raises(ValueError, match=match):
        stream = recognizer.stream()
        stream.accept_waveform(audio, rate)
        stream.finish()
