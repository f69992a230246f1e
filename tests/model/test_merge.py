"""Adjacent token merging and Matryoshka granularities: invariants, streaming = offline, timestamps,
gradients, and clear errors for bad settings."""
import dataclasses

import pytest
import torch

from asr.config import MergeConfig, MoEConfig
from asr.decoding import GreedySearch, ModifiedBeamSearch, StreamingDecoder, decode
from asr.model import ConformerEncoder, Transducer
from asr.model.merge import adjacent_similarity, merge_tokens, mergeable_pairs, ratio_budget, select_pairs
from tests.conftest import small_config

GRANULARITIES = dict(granularities=("full", "fine", "coarse"), values=(0.0, 0.2, 0.33), loss_weights=(1.0, 1.0, 1.0))


def _merge_config(mode="ratio", layers=(1, 2), **overrides):
    values = dict(GRANULARITIES)
    if mode == "threshold":
        values["values"] = (1.0, 0.3, -0.2)
    values.update(overrides)
    return MergeConfig(layers=layers, mode=mode, **values)


def _model(mode="ratio", moe=False, num_layers=4, full_context_prob=0.5, **merge) -> Transducer:
    config = small_config(num_layers=num_layers, merge=_merge_config(mode, **merge), full_context_prob=full_context_prob,
                          moe=MoEConfig(enabled=moe, num_experts=3, top_k=1, num_shared=1))
    return Transducer(config).eval()


def _stream(encoder, x, lens, chunk, left, granularity):
    state = encoder.init_state(x.shape[0], left)
    outs = []
    for start in range(0, x.shape[1], 4 * chunk):
        piece = x[:, start : start + 4 * chunk]
        piece_lens = (lens - start).clamp(0, piece.shape[1])
        out = encoder(piece, piece_lens, state=state, chunk_size=chunk, granularity=granularity)
        state = out.state
        outs.append(out)
    return outs, state


# ---- the merge primitives ---------------------------------------------------------------------

def test_merged_pair_is_the_size_weighted_mean_and_spans_tile_the_input():
    x = torch.tensor([[[1.0], [4.0], [10.0], [20.0], [7.0]]])
    start, size = torch.tensor([[0, 1, 3, 4, 6]]), torch.tensor([[1, 2, 1, 2, 1]])
    chosen = torch.tensor([[True, False, True, False]])  # (0,1) and (2,3)
    merged, lens, new_start, new_size = merge_tokens(x, torch.tensor([5]), start, size, chosen)
    assert lens.tolist() == [3]
    assert merged[0, :, 0].tolist() == pytest.approx([(1 * 1 + 4 * 2) / 3, (10 * 1 + 20 * 2) / 3, 7.0])
    assert new_start.tolist() == [[0, 3, 6]] and new_size.tolist() == [[3, 3, 1]]


def test_selected_pairs_never_overlap_and_prefer_the_most_similar():
    torch.manual_seed(1)
    similarity = torch.rand(4, 40) * 2 - 1
    ok = torch.ones_like(similarity, dtype=torch.bool)
    chosen = select_pairs(similarity, ok, threshold=torch.full((4,), -1.0))
    assert not (chosen[:, 1:] & chosen[:, :-1]).any()  # adjacent pairs share a token
    # maximal: every pair left out touches a chosen one
    touched = chosen | torch.nn.functional.pad(chosen, (1, 0))[:, :-1] | torch.nn.functional.pad(chosen, (0, 1))[:, 1:]
    assert touched.all()
    best = similarity.argmax(1)
    assert chosen[torch.arange(4), best].all()


def test_selection_is_greedy_by_similarity_within_each_chunk_budget():
    """Every pair left out either shares a token with a chosen pair at least as similar, or its
    chunk's budget went to pairs at least as similar: the most similar pairs merge first."""
    torch.manual_seed(3)
    lens = torch.tensor([24, 17])
    start = torch.arange(24).expand(2, -1).clone()
    similarity = torch.rand(2, 23)
    ok = mergeable_pairs(lens, start, chunk_size=8)
    budget, group = ratio_budget(lens, start, 8, torch.full((2,), 0.25))
    chosen = select_pairs(similarity, ok, budget=budget, group=group)
    for b in range(2):
        picked = chosen[b].nonzero().flatten().tolist()
        for p in ok[b].nonzero().flatten().tolist():
            if p in picked:
                continue
            blockers = [q for q in picked if abs(q - p) == 1 and similarity[b, q] >= similarity[b, p]]
            same_group = [q for q in picked if group[b, q] == group[b, p]]
            spent = len(same_group) == int(budget[b, group[b, p]]) and all(
                similarity[b, q] >= similarity[b, p] for q in same_group)
            assert blockers or spent, (b, p)


def _greedy_reference(similarity, ok, threshold=None, budget=None, group=None):
    """The sequential definition select_pairs must reproduce: pairs in descending similarity
    (ties: leftmost first), each taken unless it touches a taken pair or its group's budget is spent."""
    chosen = torch.zeros_like(ok)
    for b in range(similarity.shape[0]):
        left = budget[b].tolist() if budget is not None else None
        used = set()
        for p in sorted(range(similarity.shape[1]), key=lambda q: (-float(similarity[b, q]), q)):
            if not ok[b, p] or (threshold is not None and not similarity[b, p] > threshold[b]):
                continue
            if p in used or p + 1 in used:
                continue
            if left is not None:
                if left[group[b, p]] <= 0:
                    continue
                left[group[b, p]] -= 1
            used |= {p, p + 1}
            chosen[b, p] = True
    return chosen


@pytest.mark.parametrize("seed", range(6))
def test_selection_equals_the_sequential_greedy_pass(seed):
    """select_pairs is computed without a loop over pairs (peaks, monotone runs and valleys of the
    similarity path); it must give exactly the greedy result, ties, padding, chunk boundaries,
    thresholds and budgets included."""
    g = torch.Generator().manual_seed(seed)
    batch, num, chunk = 5, 41, [0, 8, 3][seed % 3]
    lens = torch.tensor([41, 30, 9, 2, 0])
    start = torch.arange(num).expand(batch, -1).clone()
    # few distinct values: many ties; seed 5 is strictly monotone (one long run)
    similarity = (torch.randint(0, 6 if seed % 2 else 40, (batch, num - 1), generator=g) / 5.0 - 1.0)
    if seed == 5:
        similarity = torch.linspace(-1, 1, num - 1).expand(batch, -1).clone()
        similarity[1] = similarity[1].flip(0)
    ok = mergeable_pairs(lens, start, chunk)
    threshold = torch.rand(batch, generator=g) - 0.5
    assert torch.equal(select_pairs(similarity, ok, threshold=threshold),
                       _greedy_reference(similarity, ok, threshold=threshold))
    for ratio in (0.1, 0.25, 0.4, 0.5):
        budget, group = ratio_budget(lens, start, chunk, torch.full((batch,), ratio))
        assert torch.equal(select_pairs(similarity, ok, budget=budget, group=group),
                           _greedy_reference(similarity, ok, budget=budget, group=group)), ratio


@pytest.mark.parametrize("ratio", [0.1, 0.25, 1 / 3])
def test_ratio_merges_exactly_round_ratio_times_tokens_per_chunk(ratio):
    torch.manual_seed(2)
    lens = torch.tensor([37, 16, 5])
    start = torch.arange(37).expand(3, -1).clone()
    similarity = torch.rand(3, 36)
    ok = mergeable_pairs(lens, start, chunk_size=8)
    budget, group = ratio_budget(lens, start, 8, torch.full((3,), ratio))
    chosen = select_pairs(similarity, ok, budget=budget, group=group)
    for b, n in enumerate(lens.tolist()):
        chunks = [min(8, n - c) for c in range(0, n, 8)]
        assert int(chosen[b].sum()) == sum(int(c * ratio + 0.5) for c in chunks)
    assert not (chosen & ~ok).any()  # never across a chunk boundary or into padding


def test_similarity_is_cosine_of_neighbours():
    keys = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    assert adjacent_similarity(keys)[0].tolist() == pytest.approx([1.0, 0.0])


# ---- the encoder ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["ratio", "threshold"])
def test_token_sizes_sum_to_frames_and_spans_tile_without_gaps(mode):
    encoder = _model(mode).encoder
    x, lens = torch.randn(3, 160, 80), torch.tensor([160, 121, 64])
    for name in encoder.granularities:
        out = encoder(x, lens, chunk_size=4, left_context=8, granularity=name)
        for b in range(3):
            n = int(out.out_lens[b])
            start, size = out.start[b, :n], out.size[b, :n]
            assert int(size.sum()) == int(lens[b]) // 4
            assert int(start[0]) == 0 and torch.equal(start[1:], (start + size)[:-1])  # contiguous, no gaps
            assert ((start // 4) == ((start + size - 1) // 4)).all()  # no token crosses a chunk
    coarse = encoder(x, lens, chunk_size=4, left_context=8, granularity="coarse")
    full = encoder(x, lens, chunk_size=4, left_context=8, granularity="full")
    assert (coarse.out_lens < full.out_lens).all()
    assert torch.equal(full.out_lens, lens // 4)


def test_threshold_one_and_ratio_zero_merge_nothing():
    x, lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
    for mode, value in (("threshold", 1.0), ("ratio", 0.0)):
        model = _model(mode, granularities=("a", "b"), values=(value, value), loss_weights=(1.0, 1.0))
        out = model.encoder(x, lens, granularity="b")
        assert torch.equal(out.out_lens, lens // 4) and (out.size[:, :30] == 1).all()
    # equal weights, nothing merged: the output is exactly the unmerged encoder's
    plain = _model("ratio", layers=(), granularities=("full",), values=(0.0,), loss_weights=(1.0,))
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain.encoder(x, lens).out, model.encoder(x, lens, granularity="a").out, atol=1e-6)


@pytest.mark.parametrize("mode", ["ratio", "threshold"])
@pytest.mark.parametrize("chunk,left,layers", [(4, 8, (1, 2)), (8, 16, (1, 2)), (2, 4, (1, 2)), (4, 8, (0,))])
def test_streaming_equals_offline_with_merging(mode, chunk, left, layers):
    """(0,): three blocks after the only merge module, whose caches share one key layout."""
    encoder = _model(mode, layers=layers).encoder
    x, lens = torch.randn(3, 200, 80), torch.tensor([200, 150, 77])
    full = encoder(x, lens, chunk_size=chunk, left_context=left, granularity="coarse")
    outs, state = _stream(encoder, x, lens, chunk, left, "coarse")
    assert (full.out_lens < lens // 4).all(), "nothing merged: the test would be vacuous"
    for b in range(3):
        pieces = [(o.out[b, : o.out_lens[b]], o.start[b, : o.out_lens[b]], o.size[b, : o.out_lens[b]]) for o in outs]
        streamed = torch.cat([p[0] for p in pieces])
        n = int(full.out_lens[b])
        assert streamed.shape[0] == n
        assert torch.equal(torch.cat([p[1] for p in pieces]), full.start[b, :n])
        assert torch.equal(torch.cat([p[2] for p in pieces]), full.size[b, :n])
        assert (streamed - full.out[b, :n]).abs().max() <= 1e-4
    assert torch.equal(state.num_frames, lens // 4)
    # the attention cache holds merged tokens: fewer slots in use than frames of left context
    used = state.layers[-1].valid.sum(1)
    assert (used < left).all() and (state.layers[0].valid.sum(1) == left).all()


def test_streams_at_different_granularities_batch_together():
    encoder = _model().encoder
    x, lens = torch.randn(2, 96, 80), torch.tensor([96, 96])
    mixed, _ = _stream(encoder, x, lens, 4, 8, ["full", "coarse"])
    alone_full, _ = _stream(encoder, x[:1], lens[:1], 4, 8, "full")
    alone_coarse, _ = _stream(encoder, x[1:], lens[1:], 4, 8, "coarse")
    for m, f, c in zip(mixed, alone_full, alone_coarse):
        assert (m.out[0, : f.out_lens[0]] - f.out[0, : f.out_lens[0]]).abs().max() <= 1e-5
        assert (m.out[1, : c.out_lens[0]] - c.out[0, : c.out_lens[0]]).abs().max() <= 1e-5


@pytest.mark.parametrize("search", [GreedySearch(), ModifiedBeamSearch(beam=3)], ids=["greedy", "beam"])
def test_every_granularity_decodes_with_monotone_timestamps_inside_the_audio(search):
    model = _model()
    x, lens = torch.randn(2, 240, 80), torch.tensor([240, 200])
    emitted = 0
    for name in model.encoder.granularities:
        with torch.no_grad():
            enc = model.encoder(x, lens, chunk_size=4, left_context=8, granularity=name)
            hyps = decode(model, search, enc.out, enc.out_lens, enc.spans)
            streaming = StreamingDecoder(model, search, 2)
            for out in _stream(model.encoder, x, lens, 4, 8, name)[0]:
                streaming.accept(out.out, out.out_lens, out.spans)
        for b, hyp in enumerate(hyps):
            emitted += len(hyp.tokens)
            assert hyp.tokens == streaming.results[b].tokens and hyp.frames == streaming.results[b].frames
            assert list(hyp.frames) == sorted(hyp.frames)
            assert all(0 <= f < e <= int(lens[b]) // 4 for f, e in zip(hyp.frames, hyp.ends))
            # each token reports the whole span of the merged token it was emitted on
            spans = {(int(s), int(s + z)) for s, z in zip(enc.start[b, : enc.out_lens[b]], enc.size[b, : enc.out_lens[b]])}
            assert all((f, e) in spans for f, e in zip(hyp.frames, hyp.ends))
    assert emitted > 0, "a random model should emit something; the test would be vacuous"


@pytest.mark.parametrize("moe", [False, True])
def test_matryoshka_loss_trains_every_granularity_and_gradients_reach_merged_layers_and_router(moe):
    model = _model(moe=moe, full_context_prob=1.0).train()
    x, lens = torch.randn(2, 160, 80), torch.tensor([160, 140])
    targets, target_lens = torch.randint(1, 30, (2, 6)), torch.tensor([6, 5])
    out = model(x, lens, targets, target_lens, step=100)
    assert set(out.by_granularity) == {"full", "fine", "coarse"}
    assert out.tokens_kept["coarse"] < out.tokens_kept["fine"] < out.tokens_kept["full"] == 1.0
    out.loss.backward()
    last = model.encoder.layers[-1]
    assert last.ff2.net[1].weight.grad.abs().sum() > 0 if not moe else last.ff2.router.weight.grad.abs().sum() > 0
    assert model.encoder.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    if moe:
        assert out.balance is not None and out.balance.item() >= 1.0 - 1e-4  # 1.0 when perfectly balanced
        assert last.ff2.shared[0].up.weight.grad.abs().sum() > 0


def test_ctc_can_be_left_to_the_granularities_that_do_not_merge():
    model = _model(full_context_prob=1.0)
    config = dataclasses.replace(model.config, loss=dataclasses.replace(model.config.loss, ctc_scale=0.3))
    x, lens = torch.randn(2, 160, 80), torch.tensor([160, 140])
    targets, target_lens = torch.randint(1, 30, (2, 6)), torch.tensor([6, 5])
    torch.manual_seed(1)
    everywhere = Transducer(config).eval()
    off = dataclasses.replace(config, loss=dataclasses.replace(config.loss, ctc_on_merged=False))
    torch.manual_seed(1)
    full_only = Transducer(off).eval()
    with torch.no_grad():
        a, b = everywhere(x, lens, targets, target_lens, step=100), full_only(x, lens, targets, target_lens, step=100)
        full = full_only.encoder(x, lens, granularity="full")
        alone = full_only.losses(full, targets, target_lens, step=100)
        merged = [full_only.losses(full_only.encoder(x, lens, granularity=n), targets, target_lens, 100, ctc=False).loss
                  for n in ("fine", "coarse")]
    assert a.by_granularity == pytest.approx(b.by_granularity)  # same weights, same transducer losses
    assert float(b.ctc) == pytest.approx(float(alone.ctc), rel=1e-5)  # the CTC figure is full's alone
    assert float(a.ctc) != pytest.approx(float(b.ctc), rel=1e-3)
    # the mean of the three granularities' losses, of which only full's has the CTC term
    assert float(b.loss) == pytest.approx(float((alone.loss + sum(merged)) / 3), rel=1e-5)
    # a model whose every trained granularity merges has no CTC head at all
    coarse_only = dataclasses.replace(off, encoder=dataclasses.replace(
        off.encoder, merge=dataclasses.replace(off.encoder.merge, loss_weights=(0.0, 1.0, 1.0))))
    assert Transducer(coarse_only).ctc_output is None and Transducer(config).ctc_output is not None


# ---- bad settings -----------------------------------------------------------------------------

def test_unknown_granularity_lists_the_valid_ones():
    model = _model()
    with pytest.raises(ValueError, match=r"unknown granularity 'ultra'.*\['full', 'fine', 'coarse'\]"):
        model.encoder(torch.randn(1, 40, 80), torch.tensor([40]), granularity="ultra")


@pytest.mark.parametrize("merge, message", [
    (dict(mode="threshold", values=(1.0, 1.5, 0.5)), r"threshold of granularity 'fine' must be a cosine in \[-1, 1\]"),
    (dict(mode="ratio", values=(0.0, 0.6, 0.3)), r"ratio of granularity 'fine' must be in \[0, 0.5\]"),
    (dict(mode="stride", values=(0.0, 0.2, 0.3)), r"merge.mode must be 'threshold' or 'ratio'"),
    (dict(layers=(9,)), r"merge.layers must be distinct block indices in \[0, 4\)"),
    (dict(values=(0.0, 0.2)), r"one entry per granularity"),
])
def test_invalid_merge_settings_are_named(merge, message):
    config = {**GRANULARITIES, "layers": (1, 2), "mode": "ratio", **merge}
    with pytest.raises(ValueError, match=message):
        ConformerEncoder(small_config(num_layers=4, merge=MergeConfig(**config)).encoder)


def test_moe_upcycled_from_a_dense_feed_forward_reproduces_it_when_routing_is_certain():
    from asr.model.conformer import FeedForward
    from asr.model.moe import MoEFeedForward, upcycle_from_dense

    dense = FeedForward(16, 32, dropout=0.0).eval()
    moe = MoEFeedForward(16, 32, 0.0, MoEConfig(enabled=True, num_experts=3, top_k=1, num_shared=1)).eval()
    assert upcycle_from_dense(moe, dense.state_dict())
    with torch.no_grad():
        moe.router.weight.zero_()
    x = torch.randn(2, 5, 16)
    y, balance = moe(x, torch.tensor([5, 5]))
    # uniform router: the routed slice is weighted by 1/3 instead of 1
    with torch.no_grad():
        h = dense.net[0](x)
        a = dense.net[4].weight[:, :16] @ torch.nn.functional.silu(dense.net[1](h)[..., :16]).unsqueeze(-1)
        b = dense.net[4].weight[:, 16:] @ torch.nn.functional.silu(dense.net[1](h)[..., 16:]).unsqueeze(-1)
        expected = a.squeeze(-1) + dense.net[4].bias + b.squeeze(-1) / 3
    assert torch.allclose(y, expected, atol=1e-5)
    assert not upcycle_from_dense(MoEFeedForward(16, 30, 0.0, MoEConfig(enabled=True, expert_dim=7)), dense.state_dict())
