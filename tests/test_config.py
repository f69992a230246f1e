import pytest
import yaml

from asr.config import TrainConfig, apply_overrides, dotted_override, from_dict, to_dict


def test_yaml_numbers_are_coerced_to_the_field_type():
    # PyYAML reads 1.0e9 (unsigned exponent) as a string; a float field must still get a float.
    overrides = yaml.safe_load("optim: {decay_steps: 1.0e9, lr: 3}\nnum_epochs: 4.0")
    config = apply_overrides(TrainConfig(), overrides)
    assert config.optim.decay_steps == 1e9 and isinstance(config.optim.decay_steps, float)
    assert config.optim.lr == 3.0 and isinstance(config.optim.lr, float)
    assert config.num_epochs == 4 and isinstance(config.num_epochs, int)
    chunks = apply_overrides(TrainConfig(), dotted_override("model.encoder.train_chunk_sizes=[4, 8.0]"))
    assert chunks.model.encoder.train_chunk_sizes == (4, 8)


@pytest.mark.parametrize("assignment, message", [
    ("optim.lr=fast", "OptimConfig.lr is a number"),
    ("num_epochs=2.5", "TrainConfig.num_epochs is a whole number"),
    ("data.spec_augment=1", "DataConfig.spec_augment is true/false"),
    ("data.train_parts=train-clean-100", "DataConfig.train_parts is a list"),
    ("exp_dir=3", "TrainConfig.exp_dir is text"),
    ("optim.nope=1", "unknown OptimConfig field 'nope'"),
])
def test_wrong_types_are_named(assignment, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), dotted_override(assignment))


def test_round_trip():
    config = apply_overrides(TrainConfig(), dotted_override("model.encoder.num_layers=3"))
    assert from_dict(TrainConfig, to_dict(config)) == config
