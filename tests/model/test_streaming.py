"""The encoder's one code path: chunk-by-chunk with a state equals one full pass under the same mask."""
import pytest
import torch

from asr.model import ConformerEncoder, chunk_attention_mask, select_states, stack_states, unstack_states
from tests.conftest import small_config


def _encoder(num_layers: int = 3) -> ConformerEncoder:
    return ConformerEncoder(small_config(num_layers=num_layers).encoder).eval()


def _stream(encoder, x, lens, chunk, left, piece_frames=None):
    """Feed x piece by piece (default: one chunk = 4*chunk feature frames) through a state."""
    state = encoder.init_state(x.shape[0], left)
    step = piece_frames or 4 * chunk
    outs = []
    for start in range(0, x.shape[1], step):
        piece = x[:, start : start + step]
        piece_lens = (lens - start).clamp(0, piece.shape[1])
        out = encoder(piece, piece_lens, state=state, chunk_size=chunk)
        state = out.state
        outs.append(out.out)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("chunk,left", [(1, 3), (2, 0), (4, 8), (5, 10), (8, 16), (8, 64)])
def test_chunk_by_chunk_encoder_equals_full_pass_with_chunk_mask(chunk, left):
    encoder = _encoder()
    x = torch.randn(3, 211, 80)
    lens = torch.tensor([211, 158, 93])
    full = encoder(x, lens, chunk_size=chunk, left_context=left)
    streamed, state = _stream(encoder, x, lens, chunk, left)
    assert torch.equal(state.num_frames, full.out_lens)
    for b, n in enumerate(full.out_lens.tolist()):
        assert (streamed[b, :n] - full.out[b, :n]).abs().max() <= 1e-4


def test_feeding_several_chunks_per_call_equals_one_chunk_per_call():
    encoder = _encoder()
    x, lens = torch.randn(2, 160, 80), torch.tensor([160, 160])
    one, _ = _stream(encoder, x, lens, chunk=4, left=8)
    three, _ = _stream(encoder, x, lens, chunk=4, left=8, piece_frames=48)
    assert (one - three).abs().max() <= 1e-4


def test_left_context_changes_the_output_so_the_mask_matters():
    encoder = _encoder()
    x, lens = torch.randn(1, 200, 80), torch.tensor([200])
    narrow = encoder(x, lens, chunk_size=4, left_context=4).out
    wide = encoder(x, lens, chunk_size=4, left_context=32).out
    assert torch.allclose(narrow[:, :8], wide[:, :8], atol=1e-5)  # first chunks see the same past
    assert (narrow[:, 20:] - wide[:, 20:]).abs().max() > 1e-3


def test_streams_of_different_ages_batched_together_match_separate_runs():
    encoder = _encoder()
    chunk, left = 4, 8
    old, young = torch.randn(1, 96, 80), torch.randn(1, 32, 80)
    # The old stream has already consumed 64 frames; the young one starts now.
    _, old_state = _stream(encoder, old[:, :64], torch.tensor([64]), chunk, left)
    young_state = encoder.init_state(1, left)
    batch_state = stack_states([old_state, young_state])
    pieces = torch.cat([old[:, 64:80], young[:, :16]])
    batched = encoder(pieces, torch.tensor([16, 16]), state=batch_state, chunk_size=chunk)
    alone_old = encoder(old[:, 64:80], torch.tensor([16]), state=old_state, chunk_size=chunk)
    alone_young = encoder(young[:, :16], torch.tensor([16]), state=young_state, chunk_size=chunk)
    assert (batched.out[0] - alone_old.out[0]).abs().max() <= 1e-5
    assert (batched.out[1] - alone_young.out[0]).abs().max() <= 1e-5
    back = unstack_states(batched.state)
    assert torch.allclose(back[1].layers[0].key, alone_young.state.layers[0].key, atol=1e-5)
    assert torch.equal(select_states(batched.state, [0]).num_frames, torch.tensor([20]))


def test_memory_per_stream_is_bounded_by_chunk_and_left_context():
    encoder = _encoder(num_layers=1)
    _, short = _stream(encoder, torch.randn(1, 64, 80), torch.tensor([64]), chunk=4, left=8)
    _, long = _stream(encoder, torch.randn(1, 640, 80), torch.tensor([640]), chunk=4, left=8)
    sizes = lambda s: [t.numel() for t in (s.subsampling, *[x for layer in s.layers for x in vars(layer).values()])]
    assert sizes(short) == sizes(long)
    assert int(long.num_frames) == 160


def test_chunk_mask_sees_own_chunk_and_bounded_left_context_only():
    mask = chunk_attention_mask(torch.tensor([0]), torch.tensor([8]), 8, 0, chunk_size=2, left_context=2)[0]
    # frame 5 is in chunk [4, 6): it sees frames 2..5 (one chunk of left context) and nothing else
    assert mask[5].nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert mask[0].nonzero().flatten().tolist() == [0, 1]
    full = chunk_attention_mask(torch.tensor([0]), torch.tensor([6]), 8, 0, chunk_size=-1, left_context=-1)[0]
    assert full[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]  # padding (frames 6, 7) hidden


def test_streaming_rejects_unbounded_left_context():
    with pytest.raises(ValueError, match="left_context"):
        _encoder().init_state(1, -1)


def test_encoder_rejects_wrong_feature_dimension():
    with pytest.raises(ValueError, match="80"):
        _encoder()(torch.randn(1, 40, 64), torch.tensor([40]))


def test_streaming_equals_offline_with_input_normalisation_set():
    encoder = _encoder()
    encoder.input_norm.set_stats(torch.randn(80) * 3 - 6, torch.rand(80) * 4 + 1)
    x, lens = torch.randn(2, 130, 80) * 4 - 6, torch.tensor([130, 101])
    full = encoder(x, lens, chunk_size=4, left_context=8)
    streamed, _ = _stream(encoder, x, lens, chunk=4, left=8)
    for b, n in enumerate(full.out_lens.tolist()):
        assert (streamed[b, :n] - full.out[b, :n]).abs().max() <= 1e-4
