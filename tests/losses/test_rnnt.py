"""Exact RNN-T loss: checked against brute-force enumeration of every alignment."""
from __future__ import annotations

import itertools

import pytest
import torch

from asr.losses import rnnt_lattice_logprob, rnnt_loss, validate_rnnt_inputs
from asr.losses.backends import k2_rnnt_loss, torchaudio_rnnt_loss


def brute_force_logprob(px: torch.Tensor, py: torch.Tensor, num_frames: int, num_tokens: int) -> torch.Tensor:
    """logsumexp over all alignments of one utterance; px (S, T), py (S+1, T).

    An alignment is T blanks and S tokens interleaved, the last symbol being a blank: choose the
    token positions among the first T+S-1 symbols.
    """
    path_scores = []
    for token_positions in itertools.combinations(range(num_frames + num_tokens - 1), num_tokens):
        s = t = 0
        score = px.new_zeros(())
        for position in range(num_frames + num_tokens):
            if position in token_positions:
                score = score + px[s, t]
                s += 1
            else:
                score = score + py[s, t]
                t += 1
        path_scores.append(score)
    return torch.logsumexp(torch.stack(path_scores), dim=0)


def brute_force_loss(logits: torch.Tensor, targets, frame_lens, target_lens, blank_id: int) -> torch.Tensor:
    """Summed negative log-likelihood from full logits (B, T, S+1, V), by enumeration."""
    log_probs = logits.log_softmax(dim=-1)
    total = logits.new_zeros(())
    for b in range(logits.shape[0]):
        num_frames, num_tokens = int(frame_lens[b]), int(target_lens[b])
        py = log_probs[b, :, :, blank_id].T  # (S+1, T)
        tokens = targets[b, :num_tokens]
        px = log_probs[b, :, torch.arange(num_tokens), tokens].T  # (S_b, T)
        total = total - brute_force_logprob(px, py, num_frames, num_tokens)
    return total


def make_batch(dtype=torch.float64, seed: int = 0):
    """B=3, T=4, S=3, V=5: full-length, shorter, and zero-length target; padding holds junk ids."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 4, 5, generator=generator, dtype=torch.float64).to(dtype)
    targets = torch.tensor([[1, 2, 3], [4, 4, 99], [-7, 0, 0]])
    frame_lens = torch.tensor([4, 3, 2])
    target_lens = torch.tensor([3, 2, 0])
    return logits, targets, frame_lens, target_lens


def test_lattice_logprob_matches_brute_force_on_random_lattices():
    generator = torch.Generator().manual_seed(1)
    batch, max_tokens, max_frames = 5, 3, 4
    px = torch.randn(batch, max_tokens, max_frames, generator=generator, dtype=torch.float64)
    py = torch.randn(batch, max_tokens + 1, max_frames, generator=generator, dtype=torch.float64)
    frame_lens = torch.tensor([4, 1, 3, 2, 4])
    target_lens = torch.tensor([3, 2, 0, 1, 2])
    ours = rnnt_lattice_logprob(px, py, frame_lens, target_lens)
    expected = torch.stack(
        [brute_force_logprob(px[b], py[b], int(frame_lens[b]), int(target_lens[b])) for b in range(batch)]
    )
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)


def test_lattice_gradient_is_the_brute_force_arc_posterior():
    """The closed-form backward (alpha + arc + beta - ll) equals autograd through path enumeration,
    weighted per utterance, for lattices of one frame, no tokens and full size."""
    generator = torch.Generator().manual_seed(3)
    batch, max_tokens, max_frames = 5, 3, 4
    px = torch.randn(batch, max_tokens, max_frames, generator=generator, dtype=torch.float64)
    py = torch.randn(batch, max_tokens + 1, max_frames, generator=generator, dtype=torch.float64)
    frame_lens, target_lens = torch.tensor([4, 1, 3, 2, 4]), torch.tensor([3, 2, 0, 1, 2])
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    ours_px, ours_py = px.clone().requires_grad_(True), py.clone().requires_grad_(True)
    (rnnt_lattice_logprob(ours_px, ours_py, frame_lens, target_lens) * weights).sum().backward()
    ref_px, ref_py = px.clone().requires_grad_(True), py.clone().requires_grad_(True)
    total = sum(weights[b] * brute_force_logprob(ref_px[b], ref_py[b], int(frame_lens[b]), int(target_lens[b]))
                for b in range(batch))
    total.backward()
    torch.testing.assert_close(ours_px.grad, ref_px.grad, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours_py.grad, ref_py.grad, atol=1e-10, rtol=1e-10)


def test_lattice_logprob_ignores_padding_even_nan():
    generator = torch.Generator().manual_seed(2)
    px = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    py = torch.randn(2, 4, 4, generator=generator, dtype=torch.float64)
    frame_lens, target_lens = torch.tensor([2, 4]), torch.tensor([1, 3])
    reference = rnnt_lattice_logprob(px, py, frame_lens, target_lens)
    px_junk, py_junk = px.clone(), py.clone()
    px_junk[0, 1:, :] = float("nan")  # tokens past S_b=1
    py_junk[0, :, 2:] = 1e6  # frames past T_b=2
    py_junk[0, 2:, :] = float("inf")  # states past S_b
    px_junk.requires_grad_(True)
    py_junk.requires_grad_(True)
    ours = rnnt_lattice_logprob(px_junk, py_junk, frame_lens, target_lens)
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    assert torch.isfinite(px_junk.grad).all() and torch.isfinite(py_junk.grad).all()
    assert px_junk.grad[0, 1:].abs().sum() == 0 and py_junk.grad[0, :, 2:].abs().sum() == 0


def test_rnnt_loss_value_and_gradient_match_brute_force():
    logits, targets, frame_lens, target_lens = make_batch()
    logits_ours = logits.clone().requires_grad_(True)
    logits_brute = logits.clone().requires_grad_(True)
    ours = rnnt_loss(logits_ours, targets, frame_lens, target_lens, blank_id=0)
    expected = brute_force_loss(logits_brute, targets, frame_lens, target_lens, blank_id=0)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)
    ours.backward()
    expected.backward()
    torch.testing.assert_close(logits_ours.grad, logits_brute.grad, atol=1e-10, rtol=1e-10)


def test_rnnt_loss_with_nonzero_blank_id_matches_brute_force():
    logits, _, frame_lens, target_lens = make_batch(seed=3)
    targets = torch.tensor([[0, 1, 2], [4, 0, 3], [3, 3, 3]])  # blank is 3; 3 only appears in padding
    target_lens = torch.tensor([3, 2, 0])
    ours = rnnt_loss(logits, targets, frame_lens, target_lens, blank_id=3)
    expected = brute_force_loss(logits, targets, frame_lens, target_lens, blank_id=3)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)


def test_zero_length_target_loss_is_minus_sum_of_blanks():
    logits, targets, frame_lens, target_lens = make_batch()
    per_utterance = rnnt_loss(logits, targets, frame_lens, target_lens, reduction="none")
    blank_log_probs = logits[2, :2, 0].log_softmax(dim=-1)[:, 0]  # state 0, frames 0..T_b-1
    torch.testing.assert_close(per_utterance[2], -blank_log_probs.sum())


def test_reductions_are_consistent():
    logits, targets, frame_lens, target_lens = make_batch()
    per_utterance = rnnt_loss(logits, targets, frame_lens, target_lens, reduction="none")
    assert per_utterance.shape == (3,)
    summed = rnnt_loss(logits, targets, frame_lens, target_lens, reduction="sum")
    averaged = rnnt_loss(logits, targets, frame_lens, target_lens, reduction="mean")
    torch.testing.assert_close(summed, per_utterance.sum())
    torch.testing.assert_close(averaged, per_utterance.mean())
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(logits, targets, frame_lens, target_lens, reduction="max")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_float32_close_to_float64(dtype):
    logits, targets, frame_lens, target_lens = make_batch()
    reference = rnnt_loss(logits.to(dtype).double(), targets, frame_lens, target_lens, reduction="none")
    ours = rnnt_loss(logits.to(dtype), targets, frame_lens, target_lens, reduction="none")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), reference, atol=1e-4, rtol=1e-5)


def test_gradients_stay_finite_for_extreme_logits():
    logits, targets, frame_lens, target_lens = make_batch(dtype=torch.float32)
    logits = (logits * 1e4).requires_grad_(True)  # log-probs down to ~-1e4: paths nearly impossible
    loss = rnnt_loss(logits, targets, frame_lens, target_lens)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def valid_inputs():
    logits, targets, frame_lens, target_lens = make_batch()
    return {"logits": logits, "targets": targets, "frame_lens": frame_lens, "target_lens": target_lens}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.update(logits=x["logits"][0]), "logits"),
        (lambda x: x.update(logits=x["logits"][:, :, :3]), "does not match targets"),
        (lambda x: x.update(targets=x["targets"][0]), "targets"),
        (lambda x: x.update(frame_lens=x["frame_lens"][:2]), "frame_lens"),
        (lambda x: x.update(target_lens=x["target_lens"][None]), "target_lens"),
        (lambda x: x.update(targets=x["targets"].float()), "targets must have an integer dtype"),
        (lambda x: x.update(frame_lens=x["frame_lens"].float()), "frame_lens must have an integer dtype"),
        (lambda x: x.update(target_lens=x["target_lens"].float()), "target_lens must have an integer dtype"),
        (lambda x: x.update(frame_lens=torch.tensor([4, 0, 2])), "frame_lens must lie in"),
        (lambda x: x.update(frame_lens=torch.tensor([5, 3, 2])), "frame_lens must lie in"),
        (lambda x: x.update(target_lens=torch.tensor([4, 2, 0])), "target_lens must lie in"),
        (lambda x: x.update(target_lens=torch.tensor([-1, 2, 0])), "target_lens must lie in"),
        (lambda x: x["targets"].__setitem__((0, 1), 5), "targets must lie in"),
        (lambda x: x["targets"].__setitem__((1, 0), -1), "targets must lie in"),
        (lambda x: x["targets"].__setitem__((0, 2), 0), "blank id"),
        (lambda x: x["logits"].__setitem__((1, 3, 0, 2), float("nan")), "NaN or inf"),
        (lambda x: x["logits"].__setitem__((0, 0, 0, 0), float("-inf")), "NaN or inf"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_problem(change, message):
    inputs = valid_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        validate_rnnt_inputs(**inputs)
    with pytest.raises(ValueError, match=message):
        rnnt_loss(**inputs)


def test_lattice_logprob_rejects_mismatched_py_shape():
    with pytest.raises(ValueError, match="py"):
        rnnt_lattice_logprob(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.tensor([3]), torch.tensor([2]))


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_matches_torchaudio_when_installed(reduction):
    pytest.importorskip("torchaudio", reason="torchaudio is not installed; adapter comparison skipped")
    logits, targets, frame_lens, target_lens = make_batch(dtype=torch.float32)
    expected = torchaudio_rnnt_loss(logits, targets, frame_lens, target_lens, reduction=reduction)
    torch.testing.assert_close(rnnt_loss(logits, targets, frame_lens, target_lens, reduction=reduction), expected)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_matches_k2_when_installed(reduction):
    pytest.importorskip("k2", reason="k2 is not installed; adapter comparison skipped")
    logits, targets, frame_lens, target_lens = make_batch(dtype=torch.float32)
    expected = k2_rnnt_loss(logits, targets, frame_lens, target_lens, reduction=reduction)
    torch.testing.assert_close(rnnt_loss(logits, targets, frame_lens, target_lens, reduction=reduction), expected)


@pytest.mark.parametrize("library, adapter", [("torchaudio", torchaudio_rnnt_loss), ("k2", k2_rnnt_loss)])
def test_backend_adapter_raises_import_error_naming_missing_library(library, adapter):
    try:
        __import__(library)
    except ImportError:
        logits, targets, frame_lens, target_lens = make_batch(dtype=torch.float32)
        with pytest.raises(ImportError, match=library):
            adapter(logits, targets, frame_lens, target_lens)
    else:
        pytest.skip(f"{library} is installed; the missing-library error cannot be observed")
