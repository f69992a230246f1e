"""Input validation: every way a client can hand us the wrong audio fails loudly and says why."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from asr.audio import load_audio, validate_waveform

RATE = 16000


def _sine(num_samples: int = 1600, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(num_samples) / RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_int16_is_scaled_to_unit_range():
    samples = np.array([-32768, 0, 16384, 32767], dtype=np.int16)
    waveform = validate_waveform(samples, RATE, RATE)
    assert waveform.dtype == torch.float32
    assert torch.equal(waveform, torch.tensor([-1.0, 0.0, 0.5, 32767 / 32768]))


def test_int16_torch_tensor_is_scaled_like_numpy():
    samples = np.array([-32768, 123, 32767], dtype=np.int16)
    assert torch.equal(validate_waveform(torch.from_numpy(samples), RATE, RATE), validate_waveform(samples, RATE, RATE))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_numpy_passes_through_as_float32(dtype):
    samples = _sine().astype(dtype)
    waveform = validate_waveform(samples, RATE, RATE)
    assert waveform.dtype == torch.float32
    assert torch.equal(waveform, torch.from_numpy(samples.astype(np.float32)))


def test_float64_torch_tensor_is_cast_to_float32():
    waveform = validate_waveform(torch.tensor([0.25, -0.5], dtype=torch.float64), RATE, RATE)
    assert waveform.dtype == torch.float32 and torch.equal(waveform, torch.tensor([0.25, -0.5]))


def test_big_endian_int16_is_accepted():
    samples = np.array([16384, -16384], dtype=">i2")
    assert torch.equal(validate_waveform(samples, RATE, RATE), torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize("shape", [(1, 1600), (1600, 1)])
def test_single_channel_2d_is_squeezed(shape):
    samples = _sine().reshape(shape)
    waveform = validate_waveform(samples, RATE, RATE)
    assert waveform.shape == (1600,)
    assert torch.equal(waveform, torch.from_numpy(_sine()))


@pytest.mark.parametrize(
    "samples, dtype_word",
    [
        (np.zeros(100, dtype=np.int32), "int32"),
        (np.zeros(100, dtype=np.uint8), "uint8"),
        (np.zeros(100, dtype=bool), "bool"),
        (np.zeros(100, dtype=np.complex64), "complex64"),
        (np.array([0.0, 0.1], dtype=object), "object"),
        (np.zeros(100, dtype=np.float16), "float16"),
        (torch.zeros(100, dtype=torch.int32), "int32"),
    ],
)
def test_unsupported_dtype_is_named_with_what_is_accepted(samples, dtype_word):
    with pytest.raises(ValueError, match=rf"unsupported sample dtype .*{dtype_word}.*int16.*float32/float64"):
        validate_waveform(samples, RATE, RATE)


def test_python_list_is_rejected_with_its_type():
    with pytest.raises(ValueError, match="numpy array or torch tensor, got list"):
        validate_waveform([0.0, 0.1], RATE, RATE)


@pytest.mark.parametrize("shape", [(2, 1600), (1600, 2), (1, 1, 1600)])
def test_multichannel_audio_asks_for_mono_mixdown(shape):
    with pytest.raises(ValueError, match="mix down to mono"):
        validate_waveform(np.zeros(shape, dtype=np.float32), RATE, RATE)


@pytest.mark.parametrize("shape", [(0,), (1, 0)])
def test_empty_audio_is_rejected(shape):
    with pytest.raises(ValueError, match="empty"):
        validate_waveform(np.zeros(shape, dtype=np.float32), RATE, RATE)


def test_empty_audio_is_allowed_for_streaming_chunks():
    assert validate_waveform(np.zeros(0, dtype=np.int16), RATE, RATE, allow_empty=True).shape == (0,)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_rejected(bad_value):
    samples = _sine()
    samples[700] = bad_value
    with pytest.raises(ValueError, match="NaN or infinite"):
        validate_waveform(samples, RATE, RATE)


def test_sample_rate_mismatch_says_resample_first():
    with pytest.raises(ValueError, match="sample rate 8000 Hz does not match the model's 16000 Hz; resample first"):
        validate_waveform(_sine(), 8000, RATE)


def test_int16_values_stored_as_float_are_rejected_with_expected_range():
    samples = (_sine() * 32768).astype(np.float32)
    with pytest.raises(ValueError, match=r"outside the expected \[-1, 1\] range.*divide by 32768"):
        validate_waveform(samples, RATE, RATE)


def test_slight_float_overshoot_is_accepted():
    # Resampling or light clipping overshoots 1 a little; that is real audio, not int16 as float.
    assert float(validate_waveform(_sine(amplitude=1.2), RATE, RATE).abs().max()) > 1.0


def test_error_messages_carry_the_input_name():
    with pytest.raises(ValueError, match="^stream-7: "):
        validate_waveform(np.zeros(0, dtype=np.float32), RATE, RATE, name="stream-7")


def test_load_audio_mixes_stereo_file_to_mono(tmp_path):
    left, right = _sine(amplitude=0.5), _sine(amplitude=0.1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    waveform = load_audio(path, RATE)
    assert waveform.shape == (1600,)
    torch.testing.assert_close(waveform, torch.from_numpy((left + right) / 2))


def test_load_audio_resamples_to_expected_rate(tmp_path):
    path = tmp_path / "low_rate.wav"
    t = np.arange(8000) / 8000  # 1 s at 8 kHz
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, subtype="PCM_16")
    waveform = load_audio(path, RATE)
    assert waveform.shape == (16000,)
    # The tone survives resampling: its spectrum peaks at 440 Hz (1 Hz bins for a 1 s signal).
    assert int(torch.fft.rfft(waveform).abs().argmax()) == 440


def test_load_audio_of_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "not_audio.wav"
    path.write_text("this is not a wav file")
    with pytest.raises(ValueError, match="cannot read audio file .*not_audio.wav"):
        load_audio(path, RATE)


def test_load_audio_of_missing_file_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read audio file .*missing.flac"):
        load_audio(tmp_path / "missing.flac", RATE)
