import pytest
import torch

from asr.config import DecoderConfig, EncoderConfig, JoinerConfig, LossConfig, ModelConfig


def small_config(vocab_size: int = 30, **encoder) -> ModelConfig:
    enc = dict(d_model=64, num_layers=2, num_heads=4, ff_dim=128, conv_kernel=7, subsampling_channels=16, dropout=0.0)
    enc.update(encoder)
    return ModelConfig(
        vocab_size=vocab_size,
        encoder=EncoderConfig(**enc),
        decoder=DecoderConfig(d_model=48),
        joiner=JoinerConfig(d_joiner=48),
        loss=LossConfig(warmup_steps=10, s_range=3),
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
