"""Training forward: losses, gradients, dynamic chunking, and clear errors for bad batches."""
import pytest
import torch

from asr.model import Transducer
from tests.conftest import small_config


def _batch(vocab=20):
    features = torch.randn(2, 90, 80)
    feature_lens = torch.tensor([90, 61])
    targets = torch.randint(1, vocab, (2, 6))
    target_lens = torch.tensor([6, 4])
    return features, feature_lens, targets, target_lens


def test_loss_is_finite_and_every_parameter_gets_a_gradient():
    model = Transducer(small_config(vocab_size=20)).train()
    out = model(*_batch(), step=0)
    assert torch.isfinite(out.loss) and out.loss > 0
    assert out.num_frames == 90 // 4 + 61 // 4
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_decoder_context_is_a_depthwise_conv_over_the_last_tokens():
    decoder = Transducer(small_config(vocab_size=20)).decoder
    tokens = torch.randint(0, 20, (3, 7))
    with torch.no_grad():
        reference = torch.relu(decoder.conv(decoder.embedding(tokens).transpose(1, 2)).transpose(1, 2))
        out = decoder(tokens)
    assert out.shape == (3, 7 - decoder.context_size + 1, decoder.output_dim)
    assert torch.allclose(out, reference, atol=1e-6)


def test_warmup_weights_shift_from_simple_to_pruned_loss():
    model = Transducer(small_config(vocab_size=20)).eval()
    batch = _batch()
    with torch.no_grad():
        early, late = model(*batch, step=0), model(*batch, step=10_000)
    assert torch.allclose(early.simple, late.simple) and torch.allclose(early.pruned, late.pruned)
    assert float(early.loss) == pytest.approx(float(early.simple + 0.1 * early.pruned), rel=1e-5)
    assert float(late.loss) == pytest.approx(float(0.5 * late.simple + late.pruned), rel=1e-5)


def test_ctc_head_adds_its_loss_when_enabled():
    import dataclasses

    config = small_config(vocab_size=20)
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, ctc_scale=0.3))
    with torch.no_grad():
        out = Transducer(config).eval()(*_batch(), step=10_000)
    assert out.ctc is not None and out.ctc > 0
    assert float(out.loss) == pytest.approx(float(0.5 * out.simple + out.pruned + 0.3 * out.ctc), rel=1e-5)


def test_dynamic_chunk_training_samples_configured_chunkings():
    model = Transducer(small_config(vocab_size=20, train_chunk_sizes=(2, 4), train_left_chunks=(-1, 2)))
    seen = {model.encoder.sample_chunking() for _ in range(200)}
    assert (-1, -1) in seen  # full context
    assert seen <= {(-1, -1), (2, -1), (2, 4), (4, -1), (4, 8)}
    assert len(seen) == 5


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda f, fl, t, tl: (f.long(), fl, t, tl), "floating-point"),
        (lambda f, fl, t, tl: (f[..., :40], fl, t, tl), r"\(B, T, 80\)"),
        (lambda f, fl, t, tl: (f, fl, t, torch.tensor([6, 0])), "zero-length targets"),
        (lambda f, fl, t, tl: (f, torch.tensor([90, 3]), t, tl), "fewer than 4 feature frames"),
        (lambda f, fl, t, tl: (f, torch.tensor([91, 61]), t, tl), "exceed the number of frames"),
        (lambda f, fl, t, tl: (f, fl, t.float(), tl), "integer"),
        (lambda f, fl, t, tl: (f, fl, t + 100, tl), r"\[0, 20\)"),
        (lambda f, fl, t, tl: (f, fl, t * 0, tl), "blank"),
        (lambda f, fl, t, tl: (f * float("nan"), fl, t, tl), "NaN"),
        (lambda f, fl, t, tl: (f, fl[:1], t, tl), "feature_lens"),
    ],
    ids=["int-features", "wrong-dim", "empty-target", "too-short", "lens-too-long", "float-targets",
         "token-out-of-range", "blank-in-target", "nan", "lens-shape"],
)
def test_bad_batches_raise_a_clear_value_error(mutate, match):
    model = Transducer(small_config(vocab_size=20))
    with pytest.raises(ValueError, match=match):
        model(*mutate(*_batch()))
