"""Pruned RNN-T: simple lattice, pruning ranges and pruned loss, checked against the exact loss."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from asr.losses import (
    get_prune_ranges,
    loss_scales,
    pruned_loss,
    pruned_rnnt_loss,
    rnnt_lattice_logprob,
    rnnt_loss,
    simple_lattice,
    simple_loss,
)

DTYPE = torch.float64


class TinyJoiner(nn.Module):
    """Linear + tanh + Linear on already-projected inputs, like the model's joiner."""

    def __init__(self, joiner_dim: int, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = nn.Linear(joiner_dim, joiner_dim).to(DTYPE)
        self.output = nn.Linear(joiner_dim, vocab_size).to(DTYPE)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(self.hidden(enc + dec)))


def full_logits(joiner, am_proj: torch.Tensor, lm_proj: torch.Tensor) -> torch.Tensor:
    """The joiner on every (t, s): (B, T, S+1, V), what the exact loss needs."""
    batch, num_frames, _ = am_proj.shape
    num_states = lm_proj.shape[1]
    enc = am_proj[:, :, None].expand(batch, num_frames, num_states, am_proj.shape[-1])
    dec = lm_proj[:, None].expand(batch, num_frames, num_states, lm_proj.shape[-1])
    return joiner(enc, dec)


def random_problem(seed: int, batch=3, num_frames=7, max_tokens=4, vocab_size=6, dim=8):
    """Random projections, targets (junk padding) and lengths, including a zero-length target."""
    generator = torch.Generator().manual_seed(seed)
    am_proj = torch.randn(batch, num_frames, dim, generator=generator, dtype=DTYPE)
    lm_proj = torch.randn(batch, max_tokens + 1, dim, generator=generator, dtype=DTYPE)
    targets = torch.randint(1, vocab_size, (batch, max_tokens), generator=generator)
    frame_lens = torch.tensor([num_frames, num_frames - 2, 3])[:batch]
    target_lens = torch.tensor([max_tokens, max_tokens - 1, 0])[:batch]
    targets[1, max_tokens - 1] = -5  # padding may hold anything
    return am_proj, lm_proj, targets, frame_lens, target_lens


def occupations(px: torch.Tensor, py: torch.Tensor, frame_lens, target_lens):
    px, py = px.detach().requires_grad_(True), py.detach().requires_grad_(True)
    log_likelihood = rnnt_lattice_logprob(px, py, frame_lens, target_lens)
    return torch.autograd.grad(log_likelihood.sum(), (px, py))


def assert_ranges_valid(ranges: torch.Tensor, frame_lens, target_lens, s_range: int) -> None:
    """Every invariant that keeps a complete path inside the pruned lattice."""
    batch, num_frames, width = ranges.shape
    assert width == s_range and ranges.dtype == torch.int64
    torch.testing.assert_close(ranges - ranges[..., :1], torch.arange(s_range).expand_as(ranges))
    starts = ranges[..., 0]
    steps = starts.diff(dim=1)
    assert (starts[:, 0] == 0).all(), "the first frame's window must start at token 0"
    assert (steps >= 0).all(), "window starts must not decrease"
    assert (steps <= s_range - 1).all(), "consecutive windows must overlap"
    for b in range(batch):
        num_tokens, last = int(target_lens[b]), int(frame_lens[b]) - 1
        assert starts[b, last] <= num_tokens <= starts[b, last] + s_range - 1, "last window must hold S_b"
        assert (starts[b] >= 0).all() and (starts[b] <= max(0, num_tokens + 1 - s_range)).all()


def test_simple_lattice_normaliser_matches_brute_logsumexp():
    generator = torch.Generator().manual_seed(0)
    am = torch.randn(2, 5, 7, generator=generator, dtype=DTYPE) * 3
    lm = torch.randn(2, 4, 7, generator=generator, dtype=DTYPE) * 3
    targets = torch.tensor([[1, 2, 6], [3, 3, 5]])
    px, py = simple_lattice(am, lm, targets, blank_id=0)
    log_probs = (am[:, :, None] + lm[:, None]).log_softmax(dim=-1)  # (B, T, S+1, V), brute force
    expected_py = log_probs[..., 0].transpose(1, 2)
    expected_px = log_probs[:, :, :3].gather(-1, targets[:, None, :, None].expand(2, 5, 3, 1))
    torch.testing.assert_close(py, expected_py)
    torch.testing.assert_close(px, expected_px.squeeze(-1).transpose(1, 2))


def test_simple_lattice_survives_disjoint_peaks_without_inf():
    am = torch.full((1, 2, 4), -200.0)
    lm = torch.full((1, 2, 4), -200.0)
    am[0, :, 1], lm[0, :, 2] = 200.0, 200.0  # every exp(am + lm) term underflows in float32
    px, py = simple_lattice(am, lm, torch.tensor([[3]]), blank_id=0)
    assert torch.isfinite(px).all() and torch.isfinite(py).all()


def test_simple_lattice_smoothing_mixes_lm_only_and_am_only_log_probs():
    generator = torch.Generator().manual_seed(1)
    am = torch.randn(2, 5, 6, generator=generator, dtype=DTYPE)
    lm = torch.randn(2, 3, 6, generator=generator, dtype=DTYPE)
    targets = torch.tensor([[1, 4], [5, 2]])
    px_joint, py_joint = simple_lattice(am, lm, targets, blank_id=0)
    px_lm_only, py_lm_only = simple_lattice(am, lm, targets, blank_id=0, lm_only_scale=1.0)
    px_am_only, py_am_only = simple_lattice(am, lm, targets, blank_id=0, am_only_scale=1.0)
    lm_log_probs, am_log_probs = lm.log_softmax(-1), am.log_softmax(-1)
    torch.testing.assert_close(py_lm_only, lm_log_probs[:, :, 0, None].expand(2, 3, 5))
    torch.testing.assert_close(px_lm_only[1, 0], lm_log_probs[1, 0, 5].expand(5))
    torch.testing.assert_close(py_am_only, am_log_probs[:, None, :, 0].expand(2, 3, 5))
    torch.testing.assert_close(px_am_only[0, 1], am_log_probs[0, :, 4])
    px_mixed, py_mixed = simple_lattice(am, lm, targets, blank_id=0, lm_only_scale=0.25, am_only_scale=0.15)
    torch.testing.assert_close(px_mixed, 0.6 * px_joint + 0.25 * px_lm_only + 0.15 * px_am_only)
    torch.testing.assert_close(py_mixed, 0.6 * py_joint + 0.25 * py_lm_only + 0.15 * py_am_only)


def test_simple_loss_equals_exact_loss_of_additive_joiner():
    am_proj, lm_proj, targets, frame_lens, target_lens = random_problem(seed=2, dim=6)
    loss, px, py = simple_loss(am_proj, lm_proj, targets, frame_lens, target_lens, reduction="none")
    exact = rnnt_loss(am_proj[:, :, None] + lm_proj[:, None], targets, frame_lens, target_lens, reduction="none")
    torch.testing.assert_close(loss, exact)
    assert px.shape == (3, 4, 7) and py.shape == (3, 5, 7)


@pytest.mark.parametrize("extra_width", [0, 3])
def test_pruned_equals_exact_when_windows_cover_all_tokens(extra_width):
    am_proj, lm_proj, targets, frame_lens, target_lens = random_problem(seed=3)
    joiner = TinyJoiner(joiner_dim=8, vocab_size=6)
    s_range = targets.shape[1] + 1 + extra_width  # windows overhang S by extra_width
    ranges = torch.arange(s_range).expand(3, 7, s_range)
    inputs = [am_proj.requires_grad_(True), lm_proj.requires_grad_(True), *joiner.parameters()]

    exact = rnnt_loss(full_logits(joiner, am_proj, lm_proj), targets, frame_lens, target_lens, reduction="none")
    exact_grads = torch.autograd.grad(exact.sum(), inputs)
    pruned = pruned_loss(joiner, am_proj, lm_proj, targets, ranges, frame_lens, target_lens, reduction="none")
    pruned_grads = torch.autograd.grad(pruned.sum(), inputs)
    torch.testing.assert_close(pruned, exact, atol=1e-10, rtol=1e-10)
    for ours, expected in zip(pruned_grads, exact_grads):
        torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("s_range", [2, 3])
def test_pruned_loss_never_below_exact_and_has_finite_gradients(s_range):
    am_proj, lm_proj, targets, frame_lens, target_lens = random_problem(seed=4)
    joiner = TinyJoiner(joiner_dim=8, vocab_size=6)
    am = torch.randn(3, 7, 6, dtype=DTYPE)
    lm = torch.randn(3, 5, 6, dtype=DTYPE)
    am_proj.requires_grad_(True)
    out = pruned_rnnt_loss(
        joiner, am, lm, am_proj, lm_proj, targets, frame_lens, target_lens, s_range=s_range, reduction="none"
    )
    exact = rnnt_loss(full_logits(joiner, am_proj, lm_proj), targets, frame_lens, target_lens, reduction="none")
    # The pruned lattice keeps a subset of the paths, so its likelihood can only be lower.
    assert (out.pruned >= exact - 1e-9).all()
    assert_ranges_valid(out.ranges, frame_lens, target_lens, s_range)
    (grad,) = torch.autograd.grad(out.pruned.sum(), am_proj)
    assert torch.isfinite(grad).all()


def peaky_problem(batch=2, num_frames=12, max_tokens=6, vocab_size=8, peak=4.0):
    """A lookup-table joiner whose lattice favours one diagonal alignment per utterance.

    am_proj is one-hot over (b, t) and lm_proj one-hot over s, so joiner(enc, dec) reads
    table[b*T + t, s]: emit the next token at frame t_s = s*T_b/S_b, blank elsewhere.
    """
    frame_lens, target_lens = torch.tensor([num_frames, 9]), torch.tensor([max_tokens, 4])
    targets = torch.randint(1, vocab_size, (batch, max_tokens), generator=torch.Generator().manual_seed(5))
    table = torch.zeros(batch * num_frames, max_tokens + 1, vocab_size, dtype=DTYPE)
    table[..., 0] = peak  # blank by default
    for b in range(batch):
        num_tokens, frames = int(target_lens[b]), int(frame_lens[b])
        for s in range(num_tokens):
            t = s * frames // num_tokens
            table[b * num_frames + t, s, 0] = 0.0
            table[b * num_frames + t, s, targets[b, s]] = peak
    am_proj = torch.eye(batch * num_frames, dtype=DTYPE).reshape(batch, num_frames, batch * num_frames)
    lm_proj = torch.eye(max_tokens + 1, dtype=DTYPE).expand(batch, max_tokens + 1, max_tokens + 1)

    def joiner(enc, dec):
        return torch.einsum("...i,...j,ijv->...v", enc, dec, table)

    return joiner, am_proj, lm_proj, targets, frame_lens, target_lens


def test_pruned_close_to_exact_on_peaky_alignment():
    joiner, am_proj, lm_proj, targets, frame_lens, target_lens = peaky_problem()
    logits = full_logits(joiner, am_proj, lm_proj)
    exact = rnnt_loss(logits, targets, frame_lens, target_lens, reduction="none")
    log_probs = logits.log_softmax(-1)
    py = log_probs[..., 0].transpose(1, 2)
    px = log_probs[:, :, :6].gather(-1, targets[:, None, :, None].expand(2, 12, 6, 1)).squeeze(-1).transpose(1, 2)
    ranges = get_prune_ranges(*occupations(px, py, frame_lens, target_lens), frame_lens, target_lens, s_range=3)
    assert_ranges_valid(ranges, frame_lens, target_lens, s_range=3)
    pruned = pruned_loss(joiner, am_proj, lm_proj, targets, ranges, frame_lens, target_lens, reduction="none")
    # Peaky but not one-hot (exact loss ~1.5-2 nats): the windows lose only a sliver of mass.
    assert (pruned >= exact).all()
    assert ((pruned - exact) / exact < 1e-2).all()
    # Windows that are valid but lag behind the peaky alignment (all mass on "emit late") cost a lot.
    late_mass = torch.zeros_like(py)
    late_mass[:, 0] = 1.0
    late = get_prune_ranges(torch.zeros_like(px), late_mass, frame_lens, target_lens, s_range=3)
    assert_ranges_valid(late, frame_lens, target_lens, s_range=3)
    misplaced = pruned_loss(joiner, am_proj, lm_proj, targets, late, frame_lens, target_lens, reduction="none")
    assert (misplaced > exact + 10.0).all() and (misplaced < 1e6).all()


@pytest.mark.parametrize(
    "seed, batch, num_frames, max_tokens, s_range", [(0, 4, 9, 6, 3), (1, 5, 5, 8, 4), (2, 3, 6, 2, 5)]
)
def test_prune_ranges_satisfy_invariants_on_random_inputs(seed, batch, num_frames, max_tokens, s_range):
    generator = torch.Generator().manual_seed(seed)
    frame_lens = torch.randint(1, num_frames + 1, (batch,), generator=generator)
    frame_lens[0] = num_frames
    target_lens = torch.minimum(
        torch.randint(0, max_tokens + 1, (batch,), generator=generator), (s_range - 1) * frame_lens
    )
    target_lens[-1] = 0
    # Real occupations of a random simple lattice ...
    am = torch.randn(batch, num_frames, 5, generator=generator, dtype=DTYPE) * 3
    lm = torch.randn(batch, max_tokens + 1, 5, generator=generator, dtype=DTYPE) * 3
    targets = torch.randint(1, 5, (batch, max_tokens), generator=generator)
    px, py = simple_lattice(am, lm, targets, blank_id=0)
    ranges = get_prune_ranges(*occupations(px, py, frame_lens, target_lens), frame_lens, target_lens, s_range)
    assert_ranges_valid(ranges, frame_lens, target_lens, s_range)
    # ... and arbitrary masses, which violate every constraint before adjustment.
    px_mass = torch.rand(batch, max_tokens, num_frames, generator=generator) ** 8
    py_mass = torch.rand(batch, max_tokens + 1, num_frames, generator=generator) ** 8
    ranges = get_prune_ranges(px_mass, py_mass, frame_lens, target_lens, s_range)
    assert_ranges_valid(ranges, frame_lens, target_lens, s_range)


def test_prune_ranges_follow_a_single_path_of_mass():
    path = torch.tensor([0, 0, 1, 3, 3, 4, 6, 7, 8, 8])  # s at each frame; moves <= 2 per frame
    num_frames, max_tokens, s_range = 10, 8, 3
    py_mass = torch.zeros(1, max_tokens + 1, num_frames)
    py_mass[0, path, torch.arange(num_frames)] = 1.0
    px_mass = torch.zeros(1, max_tokens, num_frames)
    frame_lens, target_lens = torch.tensor([num_frames]), torch.tensor([max_tokens])
    ranges = get_prune_ranges(px_mass, py_mass, frame_lens, target_lens, s_range)
    assert_ranges_valid(ranges, frame_lens, target_lens, s_range)
    assert (ranges[0] == path[:, None]).any(dim=1).all(), "every frame's window must hold the path"


def test_prune_ranges_reject_targets_longer_than_windows_can_reach():
    px_mass, py_mass = torch.rand(1, 9, 3), torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="target_lens"):
        get_prune_ranges(px_mass, py_mass, torch.tensor([3]), torch.tensor([7]), s_range=3)  # 7 > 2*3


def test_pruned_rnnt_loss_simple_part_matches_simple_loss_value_and_gradient():
    am_proj, lm_proj, targets, frame_lens, target_lens = random_problem(seed=6)
    joiner = TinyJoiner(joiner_dim=8, vocab_size=6)
    am = torch.randn(3, 7, 6, dtype=DTYPE, requires_grad=True)
    lm = torch.randn(3, 5, 6, dtype=DTYPE, requires_grad=True)
    out = pruned_rnnt_loss(joiner, am, lm, am_proj, lm_proj, targets, frame_lens, target_lens, s_range=3,
                           lm_only_scale=0.25)
    loss, px, py = simple_loss(am, lm, targets, frame_lens, target_lens, lm_only_scale=0.25)
    torch.testing.assert_close(out.simple, loss)
    ours = torch.autograd.grad(out.simple, (am, lm))
    expected = torch.autograd.grad(loss, (am, lm), retain_graph=True)
    torch.testing.assert_close(ours, expected)
    px_grad, py_grad = torch.autograd.grad(-loss, (px, py))
    torch.testing.assert_close(out.ranges, get_prune_ranges(px_grad, py_grad, frame_lens, target_lens, 3))


def test_pruned_loss_rejects_non_consecutive_ranges():
    am_proj, lm_proj, targets, frame_lens, target_lens = random_problem(seed=7)
    ranges = torch.tensor([0, 2, 3]).expand(3, 7, 3)
    with pytest.raises(ValueError, match="ranges"):
        pruned_loss(TinyJoiner(8, 6), am_proj, lm_proj, targets, ranges, frame_lens, target_lens)


def test_simple_loss_rejects_mismatched_shapes_and_bad_lengths():
    am, lm = torch.randn(2, 5, 6), torch.randn(2, 4, 6)
    targets, target_lens = torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 1])
    with pytest.raises(ValueError, match="does not match targets"):
        simple_loss(am, lm[:, :3], targets, torch.tensor([5, 5]), target_lens)
    with pytest.raises(ValueError, match="frame_lens"):
        simple_loss(am, lm, targets, torch.tensor([6, 5]), target_lens)


def test_loss_scales_warm_up_linearly_then_hold():
    assert loss_scales(0, 100, 0.5) == pytest.approx((1.0, 0.1))
    assert loss_scales(50, 100, 0.5) == pytest.approx((0.75, 0.55))
    assert loss_scales(100, 100, 0.5) == pytest.approx((0.5, 1.0))
    assert loss_scales(10_000, 100, 0.5) == pytest.approx((0.5, 1.0))
    assert loss_scales(3, 0, 0.3) == pytest.approx((0.3, 1.0))
