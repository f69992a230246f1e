"""Greedy and beam search: streaming equals offline, timestamps are sane, strategies agree."""
import numpy as np
import pytest
import torch

from asr.decoding import GreedySearch, ModifiedBeamSearch, StreamingDecoder, decode, make_search
from asr.model import Transducer
from tests.conftest import small_config

CHUNK, LEFT = 4, 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return Transducer(small_config(vocab_size=20)).eval()


def _encode_streaming(model, x, lens, chunk=CHUNK, left=LEFT):
    state = model.encoder.init_state(x.shape[0], left)
    pieces = []
    for start in range(0, x.shape[1], 4 * chunk):
        piece = x[:, start : start + 4 * chunk]
        out = model.encoder(piece, (lens - start).clamp(0, piece.shape[1]), state=state, chunk_size=chunk)
        state = out.state
        pieces.append((out.out, out.out_lens))
    return pieces


@pytest.mark.parametrize("search", [GreedySearch(), ModifiedBeamSearch(beam=4)], ids=["greedy", "beam"])
def test_streaming_hypotheses_identical_to_offline(model, search):
    x, lens = torch.randn(3, 180, 80), torch.tensor([180, 131, 77])
    with torch.no_grad():
        full = model.encoder(x, lens, chunk_size=CHUNK, left_context=LEFT)
        offline = decode(model, search, full.out, full.out_lens)
        streaming = StreamingDecoder(model, search, 3)
        for out, out_lens in _encode_streaming(model, x, lens):
            streaming.accept(out, out_lens)
    assert any(h.tokens for h in offline), "a random model should emit something; the test would be vacuous"
    for a, b in zip(offline, streaming.results):
        assert a.tokens == b.tokens
        assert a.frames == b.frames
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-3)


@pytest.mark.parametrize("search", [GreedySearch(), ModifiedBeamSearch(beam=3)], ids=["greedy", "beam"])
def test_timestamps_are_monotone_and_inside_the_audio(model, search):
    x, lens = torch.randn(2, 120, 80), torch.tensor([120, 64])
    with torch.no_grad():
        enc = model.encoder(x, lens)
        hyps = decode(model, search, enc.out, enc.out_lens)
    for hyp, n in zip(hyps, enc.out_lens.tolist()):
        assert list(hyp.frames) == sorted(hyp.frames)
        assert all(0 <= f < n for f in hyp.frames)
        assert len(hyp.frames) == len(hyp.tokens)


def test_beam_of_one_equals_greedy_with_one_symbol_per_frame(model):
    x, lens = torch.randn(2, 100, 80), torch.tensor([100, 90])
    with torch.no_grad():
        enc = model.encoder(x, lens)
        greedy = decode(model, GreedySearch(max_symbols_per_frame=1), enc.out, enc.out_lens)
        beam = decode(model, ModifiedBeamSearch(beam=1), enc.out, enc.out_lens)
    for g, b in zip(greedy, beam):
        assert g.tokens == b.tokens and g.frames == b.frames
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-4)


def test_wider_beam_never_scores_below_beam_of_one(model):
    x, lens = torch.randn(2, 100, 80), torch.tensor([100, 70])
    with torch.no_grad():
        enc = model.encoder(x, lens)
        narrow = decode(model, ModifiedBeamSearch(beam=1), enc.out, enc.out_lens)
        wide = decode(model, ModifiedBeamSearch(beam=6), enc.out, enc.out_lens)
    for n, w in zip(narrow, wide):
        assert w.log_prob >= n.log_prob - 1e-4


def test_greedy_emits_at_most_max_symbols_per_frame(model):
    with torch.no_grad():
        enc = model.encoder(torch.randn(1, 120, 80), torch.tensor([120]))
        hyp = decode(model, GreedySearch(max_symbols_per_frame=2), enc.out, enc.out_lens)[0]
    counts = np.bincount(np.array(hyp.frames, dtype=int)) if hyp.frames else np.array([0])
    assert counts.max() <= 2


@pytest.mark.parametrize("blank_bias", [0.0, -30.0], ids=["random", "blank-never-wins"])
def test_windowed_greedy_equals_frame_by_frame_greedy(blank_bias):
    """window=1 is the textbook loop (one joiner call per frame); a window of frames gives the same
    tokens, frames and scores, also when every frame spends its max_symbols_per_frame."""
    torch.manual_seed(3)
    model = Transducer(small_config(vocab_size=20)).eval()
    x, lens = torch.randn(3, 200, 80), torch.tensor([200, 150, 61])
    with torch.no_grad():
        model.joiner.output.bias[model.blank_id] += blank_bias
        enc = model.encoder(x, lens)
        by_frame = decode(model, GreedySearch(window=1), enc.out, enc.out_lens)
        windowed = decode(model, GreedySearch(window=16), enc.out, enc.out_lens)
    assert any(h.tokens for h in by_frame), "a random model should emit something; the test would be vacuous"
    for a, b, n in zip(by_frame, windowed, enc.out_lens.tolist()):
        assert (a.tokens, a.frames, a.ends) == (b.tokens, b.frames, b.ends)
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-3)
        if blank_bias:
            assert len(b.tokens) == 3 * n  # three per frame, then on to the next


def test_unknown_decoding_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="greedy"):
        make_search("viterbi")
    with pytest.raises(ValueError, match="beam"):
        ModifiedBeamSearch(beam=0)


def test_streaming_decoder_rejects_a_batch_of_the_wrong_size(model):
    with pytest.raises(ValueError, match="streams"):
        StreamingDecoder(model, GreedySearch(), 2).accept(torch.zeros(3, 4, 64), torch.tensor([4, 4, 4]))
